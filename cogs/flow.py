"""The one path every edit takes in Discord, whichever command or button started it.

Every refusal that can be known before the job exists (prompt, DMs, pause, limits, block,
credits) is answered privately before deferring. Edits that cost more than the server's
threshold, or more than half of what the member has left, ask for confirmation first. The
member then sees a "thinking" message that becomes the progress display and the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands

from bot.credits import Balance, CreditError, Estimate
from bot.edits import EditOptions, EditOrder, EditsPaused, InputImage, TooManyJobs
from bot.jobs.access import Actor
from bot.pictures.validation import AttachmentFacts, attachment_problem, clean_prompt, prompt_problem
from bot.runtime.guilds import ServerSettings
from cogs import render
from cogs.errors import PAUSED, refusal, report
from storage.jobs import Job

if TYPE_CHECKING:
    from cogs.app import Retouch

    Interaction = discord.Interaction[Retouch]

NOT_IN_DMS = "Editing in direct messages is turned off on this bot; use /edit in a server channel."
PERSONAL_OFF = "Using Retouch from your own account is turned off on this bot; use it in a server that has added Retouch."
SERVER_PAUSED = "Editing is paused on this server by its moderators; try again later."
CONFIRM_TIMEOUT = 300.0
_Offered = TypeVar("_Offered")


def anywhere(command: _Offered) -> _Offered:
    """Offer a member's command wherever the member is: in servers and DMs through the server's
    install, and through the member's own install in servers without Retouch and group DMs."""
    installs = app_commands.allowed_installs(guilds=True, users=True)
    contexts = app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    return installs(contexts(command))


def wrong_channel_text(server: ServerSettings) -> str:
    channels = ", ".join(f"<#{channel}>" for channel in server.allowed_channels[:5])
    return f"Editing is not allowed in this channel; use {channels}."


def is_age_restricted(channel: object) -> bool:
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def as_input(attachment: discord.Attachment) -> InputImage:
    return InputImage(
        url=attachment.url,
        filename=attachment.filename,
        content_type=attachment.content_type,
        size=attachment.size,
        width=attachment.width,
        height=attachment.height,
    )


def uploaded_input(payload: Mapping[str, Any]) -> InputImage:
    """A file a member put in a modal's upload, from the attachment object Discord resolved."""
    return InputImage(
        url=str(payload.get("url", "")),
        filename=str(payload.get("filename", "upload")),
        content_type=payload.get("content_type"),
        size=payload.get("size"),
        width=payload.get("width"),
        height=payload.get("height"),
    )


def facts(item: InputImage) -> AttachmentFacts:
    """What Discord told us of an image; an embedded image has no size, which the download caps."""
    return AttachmentFacts(item.filename, item.content_type, item.size or 0, item.width, item.height)


def first_problem(prompt: str, inputs: Sequence[InputImage]) -> str | None:
    found = prompt_problem(prompt)
    for item in inputs:
        found = found or attachment_problem(facts(item))
    return found


def server_of(interaction: Interaction) -> int | None:
    """The server whose Retouch this is: the interaction's, when that server installed the bot.

    Through a member's own install in a server without Retouch there is none: its settings,
    moderators, roles and credits are not ours to apply, so the member acts as in a DM, alone.
    """
    return interaction.guild_id if interaction.is_guild_integration() else None


def is_personal(interaction: Interaction) -> bool:
    """Reached only through the member's own install: a server without Retouch, or a group DM."""
    if interaction.guild_id is not None:
        return not interaction.is_guild_integration()
    return interaction.context.private_channel


def closed_here(interaction: Interaction) -> str | None:
    """Why the owner has turned editing off where the member is: in DMs with the bot, or through
    members' own installs (a personal allowance of 0)."""
    settings = interaction.client.settings
    if is_personal(interaction):
        return None if settings.credits.personal_allowance else PERSONAL_OFF
    return dms_closed(interaction.client, interaction.guild_id)


def answers_privately(interaction: Interaction) -> bool:
    """Where a server denies its members Use External Apps, Discord shows a user-installed app's
    replies to the member alone; saying so from the start keeps the edit's messages consistent."""
    return (
        interaction.guild_id is not None
        and is_personal(interaction)
        and not interaction.permissions.use_external_apps
    )


def can_moderate(interaction: Interaction) -> bool:
    """Manage Server in this channel of a server that installed Retouch; checked here, not only by
    Discord's command defaults."""
    return server_of(interaction) is not None and interaction.permissions.manage_guild


def actor_of(interaction: Interaction) -> Actor:
    """Who is acting on a job, and where, as the core's access rule needs it."""
    return Actor(interaction.user.id, server_of(interaction), moderates=can_moderate(interaction))


def role_ids(interaction: Interaction) -> list[int]:
    """The member's roles in a server that installed Retouch; a server without it grants nothing."""
    user = interaction.user
    if server_of(interaction) is None or not isinstance(user, discord.Member):
        return []
    return [role.id for role in user.roles]


def needs_confirmation(
    interaction: Interaction, server: ServerSettings, estimate: Estimate, balance: Balance
) -> bool:
    threshold = server.confirm_above
    if threshold is None:
        threshold = interaction.client.settings.credits.confirm_above
    return estimate.credits > threshold or estimate.credits * 2 > balance.available


def early_problem(bot: Retouch, prompt: str, closed: str | None) -> str | None:
    """Why an edit is refused before anything is read from the database: the prompt, editing
    closed where the member is (`closed_here`), a pause."""
    problem = prompt_problem(prompt) or closed
    if problem is None and (not bot.jobs.accepting or bot.jobs.paused):
        problem = PAUSED
    return problem


def dms_closed(bot: Retouch, guild_id: int | None) -> str | None:
    """Editing in DMs with the bot, when the owner turned it off."""
    return NOT_IN_DMS if guild_id is None and not bot.settings.editing.allow_dms else None


def server_problem(server: ServerSettings, channel_id: int | None) -> str | None:
    """Why the server's moderators do not allow an edit here now: a pause, or the channel."""
    if server.paused:
        return SERVER_PAUSED
    if not server.allows_channel(channel_id):
        return wrong_channel_text(server)
    return None


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
    kind: str = "edit",
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
    problem = early_problem(bot, prompt, closed_here(interaction))
    if problem is not None:
        await _answer_privately(interaction, problem)
        return None
    if answers_privately(interaction):
        options = replace(options, private=True)
    draft = EditOrder(
        guild_id=server_of(interaction),
        channel_id=interaction.channel_id or 0,
        user_id=interaction.user.id,
        prompt=prompt.strip(),
        images=list(inputs),
        options=EditOptions.from_dict({**options.to_dict(), "upload_limit": interaction.filesize_limit}),
        mask=mask,
        kind=kind,
        parent_id=parent_id,
        parent_output=parent_output,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
        role_ids=role_ids(interaction),
        personal=is_personal(interaction),
    )
    await bot.jobs.note(draft)
    status = await open_status(interaction, options.private)
    server = await bot.guild_settings.get(draft.guild_id)
    chosen = EditOptions.from_dict(
        {
            **draft.options.to_dict(),
            "nsfw_policy": server.nsfw_policy,
            "channel_nsfw": is_age_restricted(interaction.channel),
            "recipe": server.recipe,
            "mention": await bot.member_prefs.mentions(interaction.user.id),
        }
    )
    order = replace(draft, options=chosen, status_message_id=status.message_id)
    estimate = bot.jobs.estimate(chosen)
    problem = server_problem(server, interaction.channel_id)
    try:
        balance = await bot.jobs.preflight(order, estimate) if problem is None else None
        if (
            balance is not None
            and not confirmed
            and needs_confirmation(interaction, server, estimate, balance)
        ):
            view = ConfirmView(order, estimate)
            await bot.jobs.unnote(order)  # nothing may start before the member confirms
            await _withdraw(interaction, status, render.confirm_text(estimate, balance), view)
            return None
        job = await bot.jobs.create(order, estimate) if problem is None else None
    except (EditsPaused, TooManyJobs, CreditError) as error:
        problem, job = refusal(error), None
    if job is None:
        await bot.jobs.unnote(order)
        await _withdraw(interaction, status, problem or PAUSED)
        return None
    return await bot.jobs.enqueue(job, status.message_id)


async def _answer_privately(interaction: Interaction, text: str) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def _withdraw(
    interaction: Interaction, status: Status, text: str, view: discord.ui.View | None = None
) -> None:
    """Replace the progress message with a private answer: a private one is simply edited; a
    public one is deleted, so the refusal concerns only the member, who gets it privately."""
    if status.private:
        await interaction.followup.edit_message(status.message_id, content=text, view=view)
        return
    await interaction.followup.delete_message(status.message_id)
    if view is None:
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.followup.send(text, ephemeral=True, view=view)


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
