"""The one path every edit takes in Discord, whichever command or button started it.

Cheap checks run before deferring, so their answers can be private; the member then sees a
public (or, with `private`, ephemeral) "thinking" message that becomes the progress display
and, in the end, the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord

from bot.jobs import EditOptions, EditOrder, EditsPaused, InputImage, Progress, TooManyJobs
from bot.validation import AttachmentFacts, attachment_problem, prompt_problem
from storage.jobs import Job, JobState

if TYPE_CHECKING:
    from bot.app import Retouch

PAUSED = "Retouch is not taking new edits right now (it may be restarting); try again in a minute."
NOT_IN_DMS = "Editing in direct messages is turned off on this bot; use /edit in a server channel."


def image_facts(attachment: discord.Attachment) -> AttachmentFacts:
    return AttachmentFacts(
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        width=attachment.width,
        height=attachment.height,
    )


def as_input(attachment: discord.Attachment) -> InputImage:
    return InputImage(
        url=attachment.url,
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        width=attachment.width,
        height=attachment.height,
    )


def first_problem(prompt: str, attachments: Sequence[discord.Attachment]) -> str | None:
    found = prompt_problem(prompt)
    for attachment in attachments:
        found = found or attachment_problem(image_facts(attachment))
    return found


def too_many_text(error: TooManyJobs) -> str:
    if error.scope == "member":
        return f"You already have {error.limit} edits in progress; wait for one to finish, or cancel one."
    return f"This server already has {error.limit} edits in progress; try again in a minute."


def can_moderate(interaction: discord.Interaction[Retouch]) -> bool:
    """Manage Server in this channel; checked here, not only by Discord's command defaults."""
    return interaction.guild is not None and interaction.permissions.manage_guild


async def start_edit(
    interaction: discord.Interaction[Retouch],
    *,
    prompt: str,
    inputs: Sequence[InputImage],
    options: EditOptions,
    kind: str = "edit",
    parent: Job | None = None,
    parent_output: int | None = None,
) -> Job | None:
    """Check, defer, queue and show the place in line; None when the member was told no."""
    bot = interaction.client
    problem = prompt_problem(prompt)
    if problem is None and interaction.guild_id is None and not bot.settings.editing.allow_dms:
        problem = NOT_IN_DMS
    if problem is None and not bot.jobs.accepting:
        problem = PAUSED
    if problem is None:
        try:
            await bot.jobs.check_limits(interaction.user.id, interaction.guild_id)
        except TooManyJobs as error:
            problem = too_many_text(error)
    if problem is not None:
        await interaction.response.send_message(problem, ephemeral=True)
        return None
    chosen = EditOptions.from_dict({**options.to_dict(), "upload_limit": interaction.filesize_limit})
    deferred = await interaction.response.defer(thinking=True, ephemeral=chosen.private)
    status_message_id = deferred.message_id if deferred is not None else None
    if status_message_id is None:
        status_message_id = (await interaction.original_response()).id
    order = EditOrder(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        user_id=interaction.user.id,
        prompt=prompt.strip(),
        images=list(inputs),
        options=chosen,
        kind=kind,
        parent_id=parent.id if parent is not None else None,
        parent_output=parent_output,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
        status_message_id=status_message_id,
    )
    try:
        job = await bot.jobs.submit(order)
    except EditsPaused:
        await interaction.edit_original_response(content=PAUSED)
        return None
    except TooManyJobs as error:
        await interaction.edit_original_response(content=too_many_text(error))
        return None
    position = bot.jobs.queue_position(job.id)
    await bot.jobs.delivery.show_progress(job, Progress(JobState.QUEUED, queue_position=position))
    return job
