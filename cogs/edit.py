"""/edit and the Refine button: parse, check, hand to the job service, answer."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import EditOptions, EditOrder, EditsPaused, InputImage, Progress
from bot.validation import AttachmentFacts, attachment_problem, prompt_problem
from storage.jobs import JobState

if TYPE_CHECKING:
    from bot.app import Retouch

log = logging.getLogger(__name__)

# A text input in a modal holds at most 4000 characters (Discord's limit).
MODAL_PROMPT_MAX = 4000
# Discord's limit for a slash command's string option.
SLASH_PROMPT_MAX = 6000
PAUSED = "Retouch is not taking new edits right now (it may be restarting); try again in a minute."


def _facts(attachment: discord.Attachment) -> AttachmentFacts:
    return AttachmentFacts(
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        width=attachment.width,
        height=attachment.height,
    )


def _input(attachment: discord.Attachment) -> InputImage:
    return InputImage(
        url=attachment.url,
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        width=attachment.width,
        height=attachment.height,
    )


async def start_edit(
    interaction: discord.Interaction[Retouch],
    *,
    prompt: str,
    images: list[discord.Attachment],
    kind: str = "edit",
    parent_id: int | None = None,
    options: EditOptions | None = None,
) -> None:
    """The shared path of every edit: check cheaply and privately, defer, queue, show the place."""
    bot = interaction.client
    problem = prompt_problem(prompt) or next(
        (found for found in (attachment_problem(_facts(a)) for a in images) if found), None
    )
    if problem is None and not bot.jobs.accepting:
        problem = PAUSED
    if problem is not None:
        await interaction.response.send_message(problem, ephemeral=True)
        return
    chosen = options or EditOptions()
    chosen = EditOptions.from_dict({**chosen.to_dict(), "upload_limit": interaction.filesize_limit})
    deferred = await interaction.response.defer(thinking=True, ephemeral=chosen.private)
    status_message_id = deferred.message_id if deferred is not None else None
    if status_message_id is None:
        status_message_id = (await interaction.original_response()).id
    order = EditOrder(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        user_id=interaction.user.id,
        prompt=prompt.strip(),
        images=[_input(a) for a in images],
        options=chosen,
        kind=kind,
        parent_id=parent_id,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
        status_message_id=status_message_id,
    )
    try:
        job = await bot.jobs.submit(order)
    except EditsPaused:
        await interaction.edit_original_response(content=PAUSED)
        return
    position = bot.jobs.queue_position(job.id)
    await bot.jobs.delivery.show_progress(job, Progress(JobState.QUEUED, queue_position=position))


class RefineModal(discord.ui.Modal, title="Refine this edit"):
    prompt: discord.ui.TextInput[RefineModal] = discord.ui.TextInput(
        label="What should change next?",
        custom_id="prompt",
        style=discord.TextStyle.paragraph,
        max_length=MODAL_PROMPT_MAX,
        placeholder="e.g. now make it night time",
    )

    def __init__(self, parent_id: int, parent_options: EditOptions) -> None:
        super().__init__(custom_id=f"retouch:refine-modal:{parent_id}")
        self.parent_id = parent_id
        self.parent_options = parent_options

    async def on_submit(self, interaction: discord.Interaction[Retouch]) -> None:  # type: ignore[override]
        message = interaction.message
        outputs = [a for a in (message.attachments if message else []) if a.content_type and a.width]
        if not outputs:
            await interaction.response.send_message(
                "That result has no image left to refine; run a new /edit instead.", ephemeral=True
            )
            return
        await start_edit(
            interaction,
            prompt=self.prompt.value,
            images=outputs[:1],
            kind="refine",
            parent_id=self.parent_id,
            options=self.parent_options,
        )


class RefineButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"retouch:refine:(?P<job_id>[0-9]{1,20})",
):
    """Refine under a result, alive across restarts because its state is in the custom_id.

    The job id carries no authority: anyone may refine any result and pays with their own
    credits; actions that need authority (Delete, Cancel) check the job's owner in the database.
    """

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Refine",
                emoji="✏️",
                style=discord.ButtonStyle.primary,
                custom_id=f"retouch:refine:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> RefineButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction[Retouch]) -> None:  # type: ignore[override]
        job = await interaction.client.jobs.get(self.job_id)
        if job is None:
            await interaction.response.send_message("That edit no longer exists.", ephemeral=True)
            return
        modal = RefineModal(job.id, EditOptions.from_dict(job.options))
        modal.prompt.default = job.prompt[:MODAL_PROMPT_MAX]
        await interaction.response.send_modal(modal)


def result_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RefineButton(job_id))
    return view


class Edit(commands.Cog):
    def __init__(self, bot: Retouch) -> None:
        self.bot = bot

    @app_commands.command(name="edit", description="Edit a picture with AI: attach it and say what to change")
    @app_commands.describe(
        prompt="What to change, e.g. “replace the sky with a sunset”",
        image="The picture to edit (PNG, JPEG, WebP or GIF)",
    )
    async def edit(
        self,
        interaction: discord.Interaction[Retouch],
        prompt: app_commands.Range[str, 1, SLASH_PROMPT_MAX],
        image: discord.Attachment,
    ) -> None:
        await start_edit(interaction, prompt=prompt, images=[image])


async def setup(bot: Retouch) -> None:
    bot.add_dynamic_items(RefineButton)
    await bot.add_cog(Edit(bot))
