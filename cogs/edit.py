"""/edit, the "Edit image" message command, /history and /show."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.edits import EditOptions
from bot.masks import mask_problem
from bot.providers.base import IMAGE_SIZES
from cogs import render
from cogs.buttons import DYNAMIC_ITEMS, MODAL_PROMPT_MAX, refine_submitted, result_view, submitted_values
from cogs.flow import as_input, can_moderate, first_problem, image_facts, start_edit
from storage.jobs import JobState

if TYPE_CHECKING:
    from bot.app import Retouch

    Interaction = discord.Interaction[Retouch]

log = logging.getLogger(__name__)

# Discord's limit for a slash command's string option.
SLASH_PROMPT_MAX = 6000
SIZE_NAMES = {
    "auto": "Same shape as the image",
    "square_hd": "Square, high detail",
    "square": "Square",
    "portrait_4_3": "Portrait 3:4",
    "portrait_16_9": "Portrait 9:16",
    "landscape_4_3": "Landscape 4:3",
    "landscape_16_9": "Landscape 16:9",
}
SIZE_CHOICES = [app_commands.Choice(name=SIZE_NAMES[size], value=size) for size in IMAGE_SIZES]
Quality = Literal["low", "medium", "high"]
Format = Literal["png", "jpeg", "webp"]


EDIT_IMAGE_MODAL = re.compile(r"retouch:edit-image:(?P<message_id>[0-9]{1,20})")


def message_images(message: discord.Message) -> list[discord.Attachment]:
    return [a for a in message.attachments if a.width and (a.content_type or "").startswith("image/")][:4]


class EditImageModal(discord.ui.Modal, title="Edit this image"):
    """The form only: its submit is handled by `Edit.on_interaction`, which reads the target
    message again, so it works after a restart and two members' forms never mix."""

    prompt: discord.ui.TextInput[EditImageModal] = discord.ui.TextInput(
        label="What should change?",
        custom_id="prompt",
        style=discord.TextStyle.paragraph,
        max_length=MODAL_PROMPT_MAX,
        placeholder="e.g. replace the sky with a sunset",
    )

    def __init__(self, message_id: int) -> None:
        super().__init__(custom_id=f"retouch:edit-image:{message_id}")

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        """Answered by `Edit.on_interaction`."""


class Edit(commands.Cog):
    def __init__(self, bot: Retouch) -> None:
        self.bot = bot
        self.edit_image_menu = app_commands.ContextMenu(name="Edit image", callback=self.edit_image)
        bot.tree.add_command(self.edit_image_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.edit_image_menu.name, type=self.edit_image_menu.type)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: Interaction) -> None:
        if await refine_submitted(interaction):
            return
        data: Mapping[str, Any] = interaction.data or {}
        match = EDIT_IMAGE_MODAL.fullmatch(str(data.get("custom_id", "")))
        if interaction.type is discord.InteractionType.modal_submit and match is not None:
            await self._edit_image_submitted(interaction, int(match["message_id"]), submitted_values(data))

    async def _edit_image_submitted(
        self, interaction: Interaction, message_id: int, values: dict[str, str]
    ) -> None:
        channel = interaction.channel
        message = None
        if isinstance(channel, discord.abc.Messageable):
            with contextlib.suppress(discord.NotFound, discord.Forbidden):
                message = await channel.fetch_message(message_id)
        if message is None:
            await interaction.response.send_message(
                "I cannot see that message any more; attach the picture to /edit instead.", ephemeral=True
            )
            return
        images = message_images(message)
        prompt = values.get("prompt", "")
        problem = (
            first_problem(prompt, images) if images else "That message no longer has an image I can edit."
        )
        if problem is not None:
            await interaction.response.send_message(problem, ephemeral=True)
            return
        server = await self.bot.guild_settings.get(interaction.guild_id)
        quality = server.default_quality or self.bot.settings.editing.default_quality
        await start_edit(
            interaction,
            prompt=prompt,
            inputs=[as_input(i) for i in images],
            options=EditOptions(quality=quality),
        )

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
        format="File type of the result (default PNG)",
        private="Only you see the result",
    )
    @app_commands.choices(size=SIZE_CHOICES)
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
        format: Format = "png",
        private: bool = False,
    ) -> None:
        images = [a for a in (image, image2, image3, image4) if a is not None]
        problem = first_problem(prompt, images)
        if problem is None and mask is not None:
            problem = mask_problem(image_facts(mask), image_facts(image))
        if problem is not None:
            await interaction.response.send_message(problem, ephemeral=True)
            return
        server = await self.bot.guild_settings.get(interaction.guild_id)
        options = EditOptions(
            quality=quality or server.default_quality or self.bot.settings.editing.default_quality,
            image_size=size.value if size is not None else server.default_size or "auto",
            count=count or server.default_count or 1,
            output_format=format,
            private=private,
        )
        await start_edit(
            interaction,
            prompt=prompt,
            inputs=[as_input(a) for a in images],
            options=options,
            mask=as_input(mask) if mask is not None else None,
        )

    async def edit_image(self, interaction: Interaction, message: discord.Message) -> None:
        if not message_images(message):
            await interaction.response.send_message(
                "That message has no image I can edit; use it on a message with a picture attached.",
                ephemeral=True,
            )
            return
        await interaction.response.send_modal(EditImageModal(message.id))

    @app_commands.command(name="history", description="Your recent edits, with links to the results")
    async def history(self, interaction: Interaction) -> None:
        jobs = await self.bot.jobs.recent(interaction.user.id, limit=10)
        await interaction.response.send_message(
            render.history_text(jobs), ephemeral=True, allowed_mentions=render.NO_PINGS
        )

    @app_commands.command(name="show", description="Bring back one of your edits with its buttons")
    @app_commands.describe(job="The edit's number, as shown in /history (e.g. 42)")
    async def show(self, interaction: Interaction, job: app_commands.Range[int, 1]) -> None:
        found = await self.bot.jobs.get(job)
        if found is None or (found.user_id != interaction.user.id and not can_moderate(interaction)):
            await interaction.response.send_message(
                f"You have no edit #{job}; /history lists yours.", ephemeral=True
            )
            return
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
        await interaction.response.send_message(
            content=render.shown_text(found),
            files=[
                discord.File(path, filename=f"retouch-{found.id}-{n + 1}{path.suffix}")
                for n, path in enumerate(paths)
            ],
            view=result_view(found.id, len(paths)),
            allowed_mentions=render.NO_PINGS,
        )


async def setup(bot: Retouch) -> None:
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await bot.add_cog(Edit(bot))
