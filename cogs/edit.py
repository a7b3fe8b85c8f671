"""/edit, the "Edit image" message command, /history and /show."""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.edits import EditOptions, InputImage
from bot.jobs.access import AccessError, Act
from bot.pictures.masks import mask_problem
from bot.pictures.sizes import IMAGE_SIZES, RESOLUTIONS
from bot.pictures.validation import attachment_problem
from cogs import render
from cogs.buttons import (
    DYNAMIC_ITEMS,
    MODAL_PROMPT_MAX,
    modal_submitted,
    refine_submitted,
    result_message,
    submitted_choices,
    submitted_values,
    uploaded_files,
    upscale_sizes,
    upscale_submitted,
)
from cogs.errors import answering
from cogs.flow import (
    actor_of,
    anywhere,
    as_input,
    closed_here,
    facts,
    first_problem,
    is_personal,
    server_of,
    start_edit,
    uploaded_input,
)
from cogs.paint import grant_for, offer_painter
from storage.jobs import JobState

if TYPE_CHECKING:
    from cogs.app import Retouch

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
RESOLUTION_NAMES = {
    "1K": "1K — standard",
    "2K": "2K — larger, costs more",
    "4K": "4K — largest, costs most",
}
RESOLUTION_CHOICES = [app_commands.Choice(name=RESOLUTION_NAMES[r], value=r) for r in RESOLUTIONS]
Quality = Literal["low", "medium", "high"]
Format = Literal["png", "jpeg", "webp"]


EDIT_IMAGE_MODAL = re.compile(r"retouch:edit-image:(?P<message_id>[0-9]{1,20})")
# The images the bot posts are named after their job, which lets "Edit image" on a result
# continue its chain.
RESULT_FILE = re.compile(r"(?:SPOILER_)?retouch-(?P<job_id>[0-9]{1,20})-(?P<n>[1-4])\.\w+")
MAX_MESSAGE_IMAGES = 4
QUALITY_NAMES = {"low": "Low (cheapest)", "medium": "Medium", "high": "High (best, costs most)"}
COUNT_NAMES = {str(n): str(n) for n in range(1, 5)}
# "Edit image" targets kept for forms not yet submitted, where the bot cannot read them again.
REMEMBERED_TARGETS = 1000


def size_problem(shape: str, offered: frozenset[str]) -> str:
    """Why a size choice is refused: the configured hosts take only presets, and this one is
    under the model's minimum there (fal's `square` is 512x512, its 16:9 ones 1024x576)."""
    names = [f"“{SIZE_NAMES[name]}”" for name in IMAGE_SIZES if name in offered]
    choices = " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f"This bot's image host cannot make the “{SIZE_NAMES[shape]}” size; pick {choices}."


def _embedded(embed: discord.Embed) -> InputImage | None:
    """An embed's picture through Discord's media proxy (the only way the bot fetches it), with
    its type read from the file name, since embeds do not carry one."""
    media = embed.image if embed.image.url else embed.thumbnail
    url = media.proxy_url or ""
    filename = url.rsplit("/", 1)[-1].split("?", 1)[0]
    content_type, _ = mimetypes.guess_type(filename)
    if not url or content_type is None or not content_type.startswith("image/"):
        return None
    return InputImage(
        url=url, filename=filename, content_type=content_type, width=media.width, height=media.height
    )


def message_images(message: discord.Message) -> list[InputImage]:
    """Every picture on a message, attachments first, then images in its embeds."""
    found = [
        as_input(a) for a in message.attachments if a.width and (a.content_type or "").startswith("image/")
    ]
    found += [item for item in map(_embedded, message.embeds) if item is not None]
    return found[:MAX_MESSAGE_IMAGES]


def result_origin(message: discord.Message, bot_id: int | None) -> tuple[int, int] | None:
    """The job and output a message of the bot shows, from its first result file's name."""
    if bot_id is None or message.author.id != bot_id:
        return None
    for attachment in message.attachments:
        if (match := RESULT_FILE.fullmatch(attachment.filename)) is not None:
            return int(match["job_id"]), int(match["n"]) - 1
    return None


def _optional_choice(
    text: str, description: str, custom_id: str, choices: Mapping[str, str]
) -> discord.ui.Label[EditImageModal]:
    """A select the member may leave empty for the server's default; `choices` maps value to label."""
    return discord.ui.Label(
        text=text,
        description=description,
        component=discord.ui.Select(
            custom_id=custom_id,
            required=False,
            placeholder="Server default",
            options=[discord.SelectOption(label=label, value=value) for value, label in choices.items()],
        ),
    )


class EditImageModal(discord.ui.Modal, title="Edit this image"):
    """The form only: its submit is handled by `Edit.on_interaction`, which reads the target
    message again, so it works after a restart and two members' forms never mix. Nothing here
    reads the database, so the form opens well within Discord's 3 seconds; an option left
    empty takes the server's default."""

    def __init__(self, message_id: int) -> None:
        super().__init__(custom_id=f"retouch:edit-image:{message_id}")
        self.add_item(
            discord.ui.Label(
                text="What should change?",
                component=discord.ui.TextInput(
                    custom_id="prompt",
                    style=discord.TextStyle.paragraph,
                    max_length=MODAL_PROMPT_MAX,
                    placeholder="e.g. replace the sky with a sunset",
                ),
            )
        )
        self.add_item(
            _optional_choice(
                "Quality",
                "Higher quality costs more credits; empty = the server's default",
                "quality",
                QUALITY_NAMES,
            )
        )
        self.add_item(
            _optional_choice(
                "How many versions",
                "Each version costs credits",
                "count",
                COUNT_NAMES,
            )
        )
        self.add_item(
            discord.ui.Label(
                text="Mask (optional)",
                description="White or transparent = may change, black = keep",
                component=discord.ui.FileUpload(custom_id="mask", required=False, max_values=1),
            )
        )
        self.add_item(
            discord.ui.Label(
                text="Another reference picture (optional)",
                component=discord.ui.FileUpload(custom_id="reference", required=False, max_values=1),
            )
        )

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        """Answered by `Edit.on_interaction`."""


class Edit(commands.Cog):
    def __init__(self, bot: Retouch) -> None:
        self.bot = bot
        self.edit_image_menu = app_commands.ContextMenu(name="Edit image", callback=self.edit_image)
        # Through a member's own install (a server without Retouch, a group DM) the bot cannot read
        # the message again when the form comes back, so it keeps the one Discord sent with the
        # command, for that member only; after a restart the form asks for /edit instead.
        self._targets: OrderedDict[tuple[int, int], discord.Message] = OrderedDict()
        bot.tree.add_command(self.edit_image_menu)
        # Only where the bot's page can be reached.
        self.paint_image_menu = (
            app_commands.ContextMenu(name="Paint image", callback=self.paint_image) if bot.painter else None
        )
        if self.paint_image_menu is not None:
            bot.tree.add_command(self.paint_image_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.edit_image_menu.name, type=self.edit_image_menu.type)
        if self.paint_image_menu is not None:
            self.bot.tree.remove_command(self.paint_image_menu.name, type=self.paint_image_menu.type)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: Interaction) -> None:
        if await refine_submitted(interaction) or await upscale_submitted(interaction):
            return
        match = modal_submitted(interaction, EDIT_IMAGE_MODAL)
        if match is not None:
            async with answering(interaction, "an Edit image form"):
                await self._edit_image_submitted(
                    interaction, int(match["message_id"]), interaction.data or {}
                )

    async def _edit_image_submitted(
        self, interaction: Interaction, message_id: int, data: Mapping[str, Any]
    ) -> None:
        channel = interaction.channel
        message = self._targets.pop((interaction.user.id, message_id), None)
        if message is None and isinstance(channel, discord.abc.Messageable):
            with contextlib.suppress(discord.NotFound, discord.Forbidden):
                message = await channel.fetch_message(message_id)
        if message is None:
            await interaction.response.send_message(
                "I cannot see that message any more; attach the picture to /edit instead.", ephemeral=True
            )
            return
        images = message_images(message)
        images += [uploaded_input(item) for item in uploaded_files(data, "reference")]
        masks = [uploaded_input(item) for item in uploaded_files(data, "mask")]
        prompt = submitted_values(data).get("prompt", "")
        problem = (
            first_problem(prompt, images) if images else "That message no longer has an image I can edit."
        )
        if problem is None and masks:
            problem = mask_problem(facts(masks[0]), facts(images[0]))
        if problem is not None:
            await interaction.response.send_message(problem, ephemeral=True)
            return
        chosen = submitted_choices(data)
        server = await self.bot.guild_settings.get(server_of(interaction))
        quality = next((q for q in chosen.get("quality", []) if q in QUALITY_NAMES), None)
        count = next((int(n) for n in chosen.get("count", []) if n in COUNT_NAMES), None)
        # The bot's own result: the new edit continues its chain (no database read before the
        # acknowledgement; the job id comes from the file's name).
        origin = result_origin(message, self.bot.user.id if self.bot.user else None)
        await start_edit(
            interaction,
            prompt=prompt,
            inputs=images,
            options=EditOptions(
                quality=quality or server.default_quality or self.bot.settings.editing.default_quality,
                count=count or server.default_count or 1,
            ),
            mask=masks[0] if masks else None,
            kind="edit" if origin is None else "refine",
            parent_id=None if origin is None else origin[0],
            parent_output=None if origin is None else origin[1],
        )

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
        size_wanted = resolution.value if resolution is not None else "1K"
        if problem is None and size_wanted not in self.bot.jobs.resolutions:
            problem = (
                f"This bot's image host cannot make {size_wanted} images; "
                f"pick {' or '.join(sorted(self.bot.jobs.resolutions))}."
            )
        if problem is not None:
            await interaction.response.send_message(problem, ephemeral=True)
            return
        server = await self.bot.guild_settings.get(server_of(interaction))
        shape = size.value if size is not None else server.default_size or "auto"
        if shape not in self.bot.jobs.image_sizes:
            await interaction.response.send_message(
                size_problem(shape, self.bot.jobs.image_sizes), ephemeral=True
            )
            return
        options = EditOptions(
            quality=quality or server.default_quality or self.bot.settings.editing.default_quality,
            image_size=shape,
            resolution=size_wanted,
            count=count or server.default_count or 1,
            output_format=format,
            private=private,
        )
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
    async def edit_image(self, interaction: Interaction, message: discord.Message) -> None:
        if (closed := closed_here(interaction)) is not None:
            await interaction.response.send_message(closed, ephemeral=True)
            return
        if not message_images(message):
            await interaction.response.send_message(
                "That message has no image I can edit; use it on a message with a picture attached.",
                ephemeral=True,
            )
            return
        if is_personal(interaction):
            self._targets[interaction.user.id, message.id] = message
            while len(self._targets) > REMEMBERED_TARGETS:
                self._targets.popitem(last=False)
        await interaction.response.send_modal(EditImageModal(message.id))

    async def paint_image(self, interaction: Interaction, message: discord.Message) -> None:
        """The painter on a message's first picture; on one of the bot's results it continues that
        edit's chain, with its prompt, where the member may see it."""
        if (closed := closed_here(interaction)) is not None:
            await interaction.response.send_message(closed, ephemeral=True)
            return
        images = message_images(message)
        problem = attachment_problem(facts(images[0])) if images else None
        if not images or problem is not None:
            await interaction.response.send_message(
                problem or "That message has no image I can paint on; use it on a message with a picture.",
                ephemeral=True,
            )
            return
        server = await self.bot.guild_settings.get(interaction.guild_id)
        options = EditOptions(
            quality=server.default_quality or self.bot.settings.editing.default_quality,
            count=server.default_count or 1,
        )
        origin = result_origin(message, self.bot.user.id if self.bot.user else None)
        parent = None
        if origin is not None:
            with contextlib.suppress(AccessError):
                parent = await self.bot.jobs.acting_on(origin[0], actor_of(interaction), Act.PAINT)
        grant = grant_for(
            interaction,
            images[0],
            options,
            prompt=parent.prompt if parent is not None else "",
            kind="edit" if parent is None else "refine",
            parent_id=None if parent is None else parent.id,
            parent_output=None if parent is None or origin is None else origin[1],
        )
        await offer_painter(interaction, grant)

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
            upscale=bool(upscale_sizes(found, self.bot.jobs.resolutions)),
            paint=self.bot.painter is not None,
        )
        sent = await interaction.response.send_message(
            **message, ephemeral=found.private, allowed_mentions=render.NO_PINGS
        )
        message_id = sent.message_id if sent is not None else None
        if message_id is None:
            message_id = (await interaction.original_response()).id
        await self.bot.jobs.shown(found, interaction.channel_id, message_id)


async def setup(bot: Retouch) -> None:
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await bot.add_cog(Edit(bot))
