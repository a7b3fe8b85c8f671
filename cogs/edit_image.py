"""The message commands: "Edit image" (a form, then an edit of the message's pictures) and
"Paint image" (the painter on its first picture). On one of the bot's own results either
continues that edit's chain."""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.edits import JobKind
from bot.jobs.access import AccessError, Act
from bot.jobs.admission import SAME_SHAPE, Refused, Wishes
from bot.pictures.masks import mask_problem
from bot.pictures.validation import attachment_problem
from cogs.errors import answering
from cogs.flow import closed_here, start_edit
from cogs.forms import (
    MODAL_PROMPT_MAX,
    modal_submitted,
    submitted_choices,
    submitted_values,
    uploaded_files,
)
from cogs.inputs import facts, first_problem, message_images, result_origin, uploaded_input
from cogs.interactions import actor_of, anywhere, is_personal, server_of
from cogs.paint import grant_for, offer_painter

if TYPE_CHECKING:
    from cogs.app import Retouch
    from cogs.interactions import Interaction

EDIT_IMAGE_MODAL = re.compile(r"retouch:edit-image:(?P<message_id>[0-9]{1,20})")
QUALITY_NAMES = {"low": "Low (cheapest)", "medium": "Medium", "high": "High (best, costs most)"}
COUNT_NAMES = {str(n): str(n) for n in range(1, 5)}
# "Edit image" targets kept for forms not yet submitted, where the bot cannot read them again.
REMEMBERED_TARGETS = 1000


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
    """The form only: its submit is handled by `EditImage.on_interaction`, which reads the target
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
        """Answered by `EditImage.on_interaction`."""


class EditImage(commands.Cog):
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
        wishes = Wishes(
            quality=next((q for q in chosen.get("quality", []) if q in QUALITY_NAMES), None),
            count=next((int(n) for n in chosen.get("count", []) if n in COUNT_NAMES), None),
            image_size=SAME_SHAPE,  # the form offers no size: the picture keeps its shape
        )
        options = await self.bot.admission.options(server_of(interaction), wishes)
        if isinstance(options, Refused):
            await interaction.response.send_message(options.reason, ephemeral=True)
            return
        # The bot's own result: the new edit continues its chain (no database read before the
        # acknowledgement; the job id comes from the file's name).
        origin = result_origin(message, self.bot.user.id if self.bot.user else None)
        await start_edit(
            interaction,
            prompt=prompt,
            inputs=images,
            options=options,
            mask=masks[0] if masks else None,
            kind=JobKind.EDIT if origin is None else JobKind.REFINE,
            parent_id=None if origin is None else origin[0],
            parent_output=None if origin is None else origin[1],
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
        options = await self.bot.admission.options(interaction.guild_id, Wishes(image_size=SAME_SHAPE))
        if isinstance(options, Refused):
            await interaction.response.send_message(options.reason, ephemeral=True)
            return
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
            kind=JobKind.EDIT if parent is None else JobKind.REFINE,
            parent_id=None if parent is None else parent.id,
            parent_output=None if parent is None or origin is None else origin[1],
        )
        await offer_painter(interaction, grant)
