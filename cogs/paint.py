"""The painter's Discord side: answering a Paint press with the member's link, and queueing what
the page submits through the same checks and core calls as every other edit (`cogs.flow`).

The result goes where Paint was pressed: a status message is posted through the Paint
interaction while its token lives, so the runner edits that message as it does any edit's;
without one, the delivery posts in the channel and mentions the member.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import discord

from bot.edits import EditOptions, EditOrder, InputImage, JobKind
from bot.jobs.access import AccessError, Act, Actor
from bot.jobs.admission import Queued, Refused
from bot.pictures.validation import clean_prompt
from bot.web.painter import Choice, Grant, Link, Outcome
from cogs.interactions import is_age_restricted, is_personal, role_ids

if TYPE_CHECKING:
    from cogs.app import Retouch
    from cogs.interactions import Interaction

log = logging.getLogger(__name__)

OFFER = (
    "Paint the area to change, then press Submit on the page. The link is yours alone and works once, "
    "for 15 minutes."
)
NOT_SET_UP = (
    "The painter is not set up on this bot (it needs web.public_url); attach a mask to /edit instead."
)
NOT_PERSONAL = "The painter works in servers that added Retouch; attach a mask to /edit here instead."


def grant_for(
    interaction: Interaction,
    image: InputImage,
    options: EditOptions,
    *,
    prompt: str = "",
    references: list[InputImage] | None = None,
    kind: JobKind = JobKind.EDIT,
    parent_id: int | None = None,
    parent_output: int | None = None,
) -> Grant:
    """What this press allows, with what the checks at submit need that only the interaction knows
    (roles, the channel's age restriction, the token to deliver through)."""
    return Grant(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id or 0,
        image=image,
        options=replace(
            options,
            upload_limit=interaction.filesize_limit,
            channel_nsfw=is_age_restricted(interaction.channel),
        ),
        prompt=prompt,
        references=references or [],
        kind=kind,
        parent_id=parent_id,
        parent_output=parent_output,
        role_ids=role_ids(interaction),
        application_id=interaction.application_id,
        interaction_token=interaction.token,
    )


async def offer_painter(interaction: Interaction, grant: Grant) -> None:
    """Answer privately with a link button to the member's page."""
    painter = interaction.client.painter
    if painter is None:
        await interaction.response.send_message(NOT_SET_UP, ephemeral=True)
        return
    if is_personal(interaction):
        await interaction.response.send_message(NOT_PERSONAL, ephemeral=True)
        return
    url = await painter.issue(grant)
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label="Open the painter", emoji="🖌️", url=url))
    await interaction.response.send_message(OFFER, view=view, ephemeral=True)


class DiscordDesk:
    def __init__(self, bot: Retouch) -> None:
        self._bot = bot

    async def submit(self, link: Link, choice: Choice) -> Outcome:
        """Refuse what `start_edit` would refuse, in the same order, then create and queue; the
        page's cost and Submit are the member's confirmation."""
        bot, grant = self._bot, link.grant
        prompt = clean_prompt(choice.prompt)
        problem = bot.admission.early(prompt, grant.guild_id, personal=False)
        if problem is not None:
            return Outcome(refusal=problem)
        if grant.parent_id is not None:
            try:
                await bot.jobs.acting_on(grant.parent_id, Actor(grant.user_id, grant.guild_id), Act.PAINT)
            except AccessError as error:
                return Outcome(refusal=error.message)
        order = EditOrder(
            guild_id=grant.guild_id,
            channel_id=grant.channel_id,
            user_id=grant.user_id,
            prompt=prompt.strip(),
            images=[grant.image, *grant.references],
            options=replace(grant.options, quality=choice.quality, count=choice.count),
            mask=choice.mask,
            kind=grant.kind,
            parent_id=grant.parent_id,
            parent_output=grant.parent_output,
            role_ids=grant.role_ids,
            confirmed=True,  # the page showed the cost, and Submit was the answer
        )
        announced: list[EditOrder] = []

        async def announce(order: EditOrder) -> EditOrder:
            announced.append(await self._with_status(link, order))
            return announced[-1]

        decision = await bot.admission.admit(order, announce=announce)
        if isinstance(decision, Queued):
            return Outcome(job_id=decision.job.id)
        for shown in announced:
            await self._withdraw(link, shown)
        assert isinstance(decision, Refused)  # never NeedsConfirmation: Submit was the confirmation
        return Outcome(refusal=decision.reason)

    def _webhook(self, link: Link) -> discord.Webhook | None:
        grant = link.grant
        if grant.application_id is None or grant.interaction_token is None:
            return None
        if link.token_expires_at <= self._bot.clock.now():
            return None
        return discord.Webhook.partial(grant.application_id, grant.interaction_token, client=self._bot)

    async def _with_status(self, link: Link, order: EditOrder) -> EditOrder:
        """The order with a status message in the channel, posted through the Paint interaction
        (privately for a private edit); unchanged, so the result is posted with a mention, when
        the interaction can no longer post."""
        webhook = self._webhook(link)
        if webhook is None:
            return order
        try:
            message = await webhook.send(
                f"⏳ <@{order.user_id}> painted a mask; starting…",
                ephemeral=order.options.private,
                wait=True,
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException as error:
            log.info("painter: no status message through the interaction (%s)", error)
            return order
        return replace(
            order,
            application_id=link.grant.application_id,
            interaction_token=link.grant.interaction_token,
            token_expires_at=link.token_expires_at,
            status_message_id=message.id,
        )

    async def _withdraw(self, link: Link, order: EditOrder) -> None:
        """A refusal found after the status message was posted: the channel never sees it."""
        webhook = self._webhook(link)
        if webhook is not None and order.status_message_id is not None:
            try:
                await webhook.delete_message(order.status_message_id)
            except discord.HTTPException as error:
                log.info("painter: status message not removed (%s)", error)
