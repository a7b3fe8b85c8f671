"""/edit, /history and /show; the message commands are in `cogs.edit_image`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs.access import Act
from bot.jobs.admission import Refused, Wishes
from bot.pictures.masks import mask_problem
from bot.pictures.sizes import IMAGE_SIZES, RESOLUTIONS, SIZE_NAMES
from cogs import render
from cogs.buttons import DYNAMIC_ITEMS, result_message
from cogs.edit_image import EditImage
from cogs.flow import start_edit
from cogs.forms import refine_submitted, upscale_submitted
from cogs.inputs import as_input, facts, first_problem
from cogs.interactions import actor_of, anywhere, server_of
from cogs.paint import grant_for, offer_painter
from storage.jobs import JobState

if TYPE_CHECKING:
    from cogs.app import Retouch
    from cogs.interactions import Interaction

# Discord's limit for a slash command's string option.
SLASH_PROMPT_MAX = 6000
SIZE_CHOICES = [app_commands.Choice(name=SIZE_NAMES[size], value=size) for size in IMAGE_SIZES]
RESOLUTION_NAMES = {
    "1K": "1K — standard",
    "2K": "2K — larger, costs more",
    "4K": "4K — largest, costs most",
}
RESOLUTION_CHOICES = [app_commands.Choice(name=RESOLUTION_NAMES[r], value=r) for r in RESOLUTIONS]
Quality = Literal["low", "medium", "high"]
Format = Literal["png", "jpeg", "webp"]


class Edit(commands.Cog):
    def __init__(self, bot: Retouch) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_interaction(self, interaction: Interaction) -> None:
        """The forms under a result, answered from their custom_id (see `cogs.forms`)."""
        if not await refine_submitted(interaction):
            await upscale_submitted(interaction)

    @anywhere
    @app_commands.command(name="edit", description="Edit a picture with AI: attach it and say what to change")
    @app_commands.describe(
        prompt="What to change, e.g. “replace the sky with a sunset”",
        image="The picture to edit (PNG, JPEG, WebP or GIF)",
        image2="Another reference picture (optional)",
        image3="Another reference picture (optional)",
        image4="Another reference picture (optional)",
        mask="Where the picture may change: white (or transparent) = change, black = keep",
        quality="Higher quality costs more credits (low 1, medium 4, high 14 per image)",
        size="Shape of the result (default: the server's, else the same as the picture)",
        count="How many versions to make, 1–4 (each costs credits; default 1)",
        resolution="How large the result is: 1K (default); 2K and 4K cost more, see /credits prices",
        format="File type of the result (default PNG)",
        private="Only you see the result",
        paint="Paint where the picture may change in your browser first, instead of attaching a mask",
    )
    @app_commands.choices(size=SIZE_CHOICES, resolution=RESOLUTION_CHOICES)
    async def edit(
        self,
        interaction: Interaction,
        prompt: app_commands.Range[str, 1, SLASH_PROMPT_MAX],
        image: discord.Attachment,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        quality: Quality | None = None,
        size: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        resolution: app_commands.Choice[str] | None = None,
        format: Format = "png",
        private: bool = False,
        paint: bool = False,
    ) -> None:
        images = [as_input(a) for a in (image, image2, image3, image4) if a is not None]
        problem = first_problem(prompt, images)
        if problem is None and mask is not None:
            problem = mask_problem(facts(as_input(mask)), facts(images[0]))
        if problem is not None:
            await interaction.response.send_message(problem, ephemeral=True)
            return
        wishes = Wishes(
            quality=quality,
            count=count,
            image_size=size.value if size is not None else None,
            resolution=resolution.value if resolution is not None else None,
            output_format=format,
            private=private,
        )
        options = await self.bot.admission.options(server_of(interaction), wishes)
        if isinstance(options, Refused):
            await interaction.response.send_message(options.reason, ephemeral=True)
            return
        if paint:
            grant = grant_for(interaction, images[0], options, prompt=prompt, references=images[1:])
            await offer_painter(interaction, grant)
            return
        await start_edit(
            interaction,
            prompt=prompt,
            inputs=images,
            options=options,
            mask=as_input(mask) if mask is not None else None,
        )

    @anywhere
    @app_commands.command(name="history", description="Your recent edits here, with links to the results")
    async def history(self, interaction: Interaction) -> None:
        jobs = await self.bot.jobs.recent(interaction.user.id, server_of(interaction), limit=10)
        await interaction.response.send_message(
            render.history_text(jobs), ephemeral=True, allowed_mentions=render.NO_PINGS
        )

    @anywhere
    @app_commands.command(name="show", description="Bring back one of your edits with its buttons")
    @app_commands.describe(job="The edit's number, as shown in /history (e.g. 42)")
    async def show(self, interaction: Interaction, job: app_commands.Range[int, 1]) -> None:
        """Only in the server the edit was made in; a private edit only to its requester and only
        privately; a moderator may show the server's public edits. The new message carries the
        job's buttons, so it is recorded as one of the job's messages."""
        found = await self.bot.jobs.acting_on(job, actor_of(interaction), Act.SHOW)
        if found.state is not JobState.DONE:
            await interaction.response.send_message(render.not_done_text(found), ephemeral=True)
            return
        paths = await self.bot.jobs.kept_outputs(found.id)
        if not paths:
            await interaction.response.send_message(
                f"The images of edit #{job} are no longer kept; run it again with Retry on the original.",
                ephemeral=True,
            )
            return
        message = result_message(
            found.id,
            render.shown_text(found),
            [
                discord.File(path, filename=f"retouch-{found.id}-{n + 1}{path.suffix}")
                for n, path in enumerate(paths)
            ],
            upscale=bool(self.bot.admission.upscale_offers(found)),
            paint=self.bot.painter is not None,
        )
        async with self.bot.jobs.showing(found) as record:
            sent = await interaction.response.send_message(
                **message, ephemeral=found.private, allowed_mentions=render.NO_PINGS
            )
            message_id = sent.message_id if sent is not None else None
            if message_id is None:
                message_id = (await interaction.original_response()).id
            await record(interaction.channel_id, message_id)


async def setup(bot: Retouch) -> None:
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await bot.add_cog(Edit(bot))
    await bot.add_cog(EditImage(bot))
