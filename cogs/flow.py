"""The one path every edit takes in Discord, whichever command or button started it.

Every refusal that can be known before the job exists (prompt, DMs, pause, limits, block,
credits) is answered privately before deferring. Edits that cost more than the server's
threshold, or more than half of what the member has left, ask for confirmation first. The
member then sees a "thinking" message that becomes the progress display and the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord

from bot.credits import Balance, CreditError, Estimate
from bot.edits import EditOptions, EditOrder, EditsPaused, InputImage, TooManyJobs
from bot.guilds import ServerSettings
from bot.validation import AttachmentFacts, attachment_problem, clean_prompt, prompt_problem
from cogs import render
from storage.jobs import Job

if TYPE_CHECKING:
    from bot.app import Retouch

    Interaction = discord.Interaction[Retouch]

PAUSED = "Retouch is not taking new edits right now (it may be restarting); try again in a minute."
NOT_IN_DMS = "Editing in direct messages is turned off on this bot; use /edit in a server channel."
SERVER_PAUSED = "Editing is paused on this server by its moderators; try again later."
CONFIRM_TIMEOUT = 300.0


def wrong_channel_text(server: ServerSettings) -> str:
    channels = ", ".join(f"<#{channel}>" for channel in server.allowed_channels[:5])
    return f"Editing is not allowed in this channel; use {channels}."


def is_age_restricted(channel: object) -> bool:
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


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


def refusal(error: Exception) -> str:
    if isinstance(error, TooManyJobs):
        return too_many_text(error)
    if isinstance(error, CreditError):
        return error.message
    return PAUSED


def can_moderate(interaction: Interaction) -> bool:
    """Manage Server in this channel; checked here, not only by Discord's command defaults."""
    return interaction.guild is not None and interaction.permissions.manage_guild


def role_ids(interaction: Interaction) -> list[int]:
    user = interaction.user
    return [role.id for role in user.roles] if isinstance(user, discord.Member) else []


def needs_confirmation(
    interaction: Interaction, server: ServerSettings, estimate: Estimate, balance: Balance
) -> bool:
    threshold = server.confirm_above
    if threshold is None:
        threshold = interaction.client.settings.credits.confirm_above
    return estimate.credits > threshold or estimate.credits * 2 > balance.available


async def open_status(interaction: Interaction, private: bool) -> int:
    """The message that will show progress and then the result; its id is kept with the job."""
    if not interaction.response.is_done():
        deferred = await interaction.response.defer(thinking=True, ephemeral=private)
        if deferred is not None and deferred.message_id is not None:
            return deferred.message_id
        return (await interaction.original_response()).id
    message = await interaction.followup.send("⏳ Starting…", ephemeral=private, wait=True)
    return message.id


async def start_edit(
    interaction: Interaction,
    *,
    prompt: str,
    inputs: Sequence[InputImage],
    options: EditOptions,
    kind: str = "edit",
    parent: Job | None = None,
    parent_output: int | None = None,
    mask: InputImage | None = None,
    confirmed: bool = False,
) -> Job | None:
    """Check, maybe confirm, defer, queue and show the place in line; None when refused."""
    bot = interaction.client
    prompt = clean_prompt(prompt)
    server = await bot.guild_settings.get(interaction.guild_id)
    chosen = EditOptions.from_dict(
        {
            **options.to_dict(),
            "upload_limit": interaction.filesize_limit,
            "nsfw_policy": server.nsfw_policy,
            "channel_nsfw": is_age_restricted(interaction.channel),
        }
    )
    order = EditOrder(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        user_id=interaction.user.id,
        prompt=prompt.strip(),
        images=list(inputs),
        options=chosen,
        mask=mask,
        kind=kind,
        parent_id=parent.id if parent is not None else None,
        parent_output=parent_output,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
        role_ids=role_ids(interaction),
    )
    estimate = bot.jobs.estimate(chosen)
    problem = prompt_problem(prompt)
    if problem is None and interaction.guild_id is None and not bot.settings.editing.allow_dms:
        problem = NOT_IN_DMS
    if problem is None and server.paused:
        problem = SERVER_PAUSED
    if problem is None and not server.allows_channel(interaction.channel_id):
        problem = wrong_channel_text(server)
    balance: Balance | None = None
    if problem is None:
        try:
            balance = await bot.jobs.preflight(order, estimate)
        except (EditsPaused, TooManyJobs, CreditError) as error:
            problem = refusal(error)
    if problem is not None or balance is None:
        await _answer_privately(interaction, problem or PAUSED)
        return None
    if not confirmed and needs_confirmation(interaction, server, estimate, balance):
        view = ConfirmView(order, estimate, parent)
        await interaction.response.send_message(
            render.confirm_text(estimate, balance), view=view, ephemeral=True
        )
        return None
    try:
        job = await bot.jobs.create(order, estimate)
    except (EditsPaused, TooManyJobs, CreditError) as error:
        # Rare: the situation changed since the checks above; still nothing has started.
        await _answer_privately(interaction, refusal(error))
        return None
    try:
        status_message_id = await open_status(interaction, chosen.private)
    except discord.HTTPException:
        await bot.jobs.cancel(job.id)  # Discord never showed the edit: give the credits back
        raise
    return await bot.jobs.enqueue(job, status_message_id)


async def _answer_privately(interaction: Interaction, text: str) -> None:
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


class ConfirmView(discord.ui.View):
    """Go / no-go on an expensive edit; in memory only, as it is answered within minutes."""

    def __init__(self, order: EditOrder, estimate: Estimate, parent: Job | None) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT)
        self.order = order
        self.estimate = estimate
        self.parent = parent

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
            parent=self.parent,
            parent_output=self.order.parent_output,
            mask=self.order.mask,
            confirmed=True,
        )

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Cancelled; nothing was charged.", view=None)
