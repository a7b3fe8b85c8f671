"""The one path every edit takes in Discord, whichever command or button started it.

The core decides (`bot.jobs.admission`); this module acknowledges and renders its answer.
Every refusal that can be known before the job exists and without the database (prompt, DMs,
pause) is answered privately before deferring; the rest replace the "thinking" message with a
private answer. An edit the core wants confirmed asks the member first. Otherwise the member's
"thinking" message becomes the progress display and the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import discord

from bot.credits import Estimate
from bot.edits import EditOptions, EditOrder, InputImage, JobKind
from bot.jobs.admission import NeedsConfirmation, Queued, Refused
from bot.pictures.validation import clean_prompt
from cogs import render
from cogs.errors import report
from cogs.interactions import (
    answer_privately,
    answers_privately,
    is_age_restricted,
    is_personal,
    role_ids,
    server_of,
    withdraw,
)
from storage.jobs import Job

if TYPE_CHECKING:
    from cogs.interactions import Interaction

CONFIRM_TIMEOUT = 300.0


def closed_here(interaction: Interaction) -> str | None:
    """Why the owner has turned editing off where the member is (see `bot.jobs.admission`)."""
    return interaction.client.admission.closed(interaction.guild_id, personal=is_personal(interaction))


@dataclass(frozen=True)
class Status:
    """The member's progress message: the deferred original response, or a followup."""

    message_id: int
    original: bool
    private: bool


async def open_status(interaction: Interaction, private: bool) -> Status:
    """Acknowledge the interaction with the message that will show progress, then the result."""
    if not interaction.response.is_done():
        deferred = await interaction.response.defer(thinking=True, ephemeral=private)
        message_id = deferred.message_id if deferred is not None else None
        if message_id is None:
            message_id = (await interaction.original_response()).id
        return Status(message_id, original=True, private=private)
    message = await interaction.followup.send("⏳ Starting…", ephemeral=private, wait=True)
    return Status(message.id, original=False, private=private)


async def start_edit(
    interaction: Interaction,
    *,
    prompt: str,
    inputs: Sequence[InputImage],
    options: EditOptions,
    kind: JobKind = JobKind.EDIT,
    parent_id: int | None = None,
    parent_output: int | None = None,
    mask: InputImage | None = None,
    confirmed: bool = False,
) -> Job | None:
    """Check, acknowledge, check again, maybe confirm, queue; None when the member was told no.

    Discord allows 3 seconds for the acknowledgement, and under a burst the database can keep
    a request waiting longer than that, so only checks that need no database run first (their
    answer is private at once); the acknowledgement comes next, and a refusal found after it
    replaces the "thinking" message with a private answer.
    """
    bot = interaction.client
    prompt = clean_prompt(prompt)
    problem = bot.admission.early(prompt, interaction.guild_id, personal=is_personal(interaction))
    if problem is not None:
        await answer_privately(interaction, problem)
        return None
    # All the order needs from the interaction, so the journal entry carries it.
    options = replace(
        options,
        private=options.private or answers_privately(interaction),
        upload_limit=interaction.filesize_limit,
        channel_nsfw=is_age_restricted(interaction.channel),
    )
    draft = EditOrder(
        guild_id=server_of(interaction),
        channel_id=interaction.channel_id or 0,
        user_id=interaction.user.id,
        prompt=prompt.strip(),
        images=list(inputs),
        options=options,
        mask=mask,
        kind=kind,
        parent_id=parent_id,
        parent_output=parent_output,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
        role_ids=role_ids(interaction),
        personal=is_personal(interaction),
        confirmed=confirmed,
    )
    with bot.admission.acknowledging():
        draft = await bot.jobs.note(draft)
        status = await open_status(interaction, options.private)
    match await bot.admission.admit(replace(draft, status_message_id=status.message_id)):
        case Queued(job):
            return job
        case NeedsConfirmation(asked, estimate, balance):
            view = ConfirmView(asked, estimate)
            await _withdraw(interaction, status, render.confirm_text(estimate, balance), view)
        case Refused(reason):
            await _withdraw(interaction, status, reason)
    return None


async def _withdraw(
    interaction: Interaction, status: Status, text: str, view: discord.ui.View | None = None
) -> None:
    await withdraw(interaction.followup, status.message_id, text, private=status.private, view=view)


class ConfirmView(discord.ui.View):
    """Go / no-go on an expensive edit; in memory only, as it is answered within minutes."""

    def __init__(self, order: EditOrder, estimate: Estimate) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT)
        self.order = order
        self.estimate = estimate

    async def on_error(  # type: ignore[override]
        self, interaction: Interaction, error: Exception, item: discord.ui.Item[ConfirmView]
    ) -> None:
        await report(interaction, error, "the confirmation of an edit")

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success)
    async def confirm(self, interaction: Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        self.stop()
        await interaction.response.edit_message(
            content=f"✅ Confirmed: {self.estimate.credits} credits.", view=None
        )
        await start_edit(
            interaction,
            prompt=self.order.prompt,
            inputs=self.order.images,
            options=self.order.options,
            kind=self.order.kind,
            parent_id=self.order.parent_id,
            parent_output=self.order.parent_output,
            mask=self.order.mask,
            confirmed=True,
        )

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Cancelled; nothing was charged.", view=None)
