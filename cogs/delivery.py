"""The job runner's voice in Discord: progress, results and failures.

While the interaction token lives (15 minutes) everything edits the member's original
"thinking" message, so one edit is one message; a failure then concerns the member alone, so a
public status message is withdrawn and the member told privately. After that the result or
failure goes to the channel with a mention, and if the channel is gone or closed to the bot, to
the member's DMs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import discord

from bot.edits import DeliveryFailed, EditOptions, Progress, Receipt, ResultFile
from cogs import render
from cogs.buttons import progress_view, result_message, upscale_sizes
from storage.jobs import Job, JobState, utcnow

if TYPE_CHECKING:
    from cogs.app import Retouch

log = logging.getLogger(__name__)

# Builds a message's keyword arguments; called once per attempt because a discord.File is
# consumed by a send, and told whether the member must be mentioned (outside the interaction).
_Builder = Callable[[bool], dict[str, Any]]
_T = TypeVar("_T")

SAME_STAGE_INTERVAL = 5.0
_STAGE = {JobState.QUEUED: 0, JobState.SUBMITTING: 1, JobState.RUNNING: 2, JobState.DELIVERING: 3}


class DiscordDelivery:
    def __init__(self, bot: Retouch) -> None:
        self._bot = bot
        self._locks: dict[int, asyncio.Lock] = {}
        self._shown: dict[int, tuple[int, float]] = {}

    def _count(self, error: discord.HTTPException) -> None:
        self._bot.metrics.discord_errors.labels(str(error.status)).inc()

    def _lock(self, job_id: int) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())

    def _forget(self, job_id: int) -> None:
        self._locks.pop(job_id, None)
        self._shown.pop(job_id, None)

    async def _webhook(self, job: Job) -> tuple[discord.Webhook, int] | None:
        """The interaction's webhook and original message while its token is valid, else None.

        A crash can fall between Discord accepting the defer and the message id being written;
        the token still reaches that message as `@original` (the route discord.py itself uses
        for original responses), so its id is asked for then.
        """
        if job.interaction_token is None or job.application_id is None:
            return None
        if job.token_expires_at is None or job.token_expires_at <= utcnow():
            return None
        # An application webhook, as discord.py builds `interaction.followup`: only it may send
        # private (ephemeral) followups.
        webhook = discord.Webhook.from_state(
            {"id": job.application_id, "type": 3, "token": job.interaction_token}, self._bot._connection
        )
        if job.status_message_id is not None:
            return webhook, job.status_message_id
        try:
            original = await webhook.fetch_message(cast(int, "@original"))
        except discord.HTTPException:
            return None
        return webhook, original.id

    async def show_progress(self, job: Job, progress: Progress) -> None:
        found = await self._webhook(job)
        if found is None:
            return
        webhook, message_id = found
        stage = _STAGE.get(progress.state, 0)
        async with self._lock(job.id):
            # Updates can arrive out of order (the queue notice races the worker); never go back,
            # and within a stage edit at most every few seconds so a busy line does not spam.
            shown_stage, shown_at = self._shown.get(job.id, (-1, 0.0))
            now = time.monotonic()
            if stage < shown_stage or (stage == shown_stage and now - shown_at < SAME_STAGE_INTERVAL):
                return
            self._shown[job.id] = (stage, now)
            try:
                await webhook.edit_message(
                    message_id, content=render.progress_text(job, progress), view=progress_view(job.id)
                )
            except discord.HTTPException as exc:
                self._count(exc)
                log.info("job %d: progress update not shown (%s)", job.id, exc)

    async def deliver(self, job: Job, files: Sequence[ResultFile]) -> Receipt:
        async with self._lock(job.id):
            upscale = bool(upscale_sizes(job, self._bot.jobs.resolutions))
            message = await self._post(
                job,
                lambda mention: result_message(
                    job.id,
                    render.result_text(job, files, mention=mention),
                    [discord.File(f.path, filename=f.filename, spoiler=f.spoiler) for f in files],
                    upscale=upscale,
                ),
                nonce=f"retouch-{job.id}",
                reuse_original=True,
            )
        self._forget(job.id)
        return Receipt(message.id, [attachment.url for attachment in message.attachments])

    async def report_failure(self, job: Job, message: str) -> None:
        async with self._lock(job.id):
            try:
                if not await self._refuse_privately(job, message):
                    await self._post(
                        job,
                        lambda mention: {
                            "content": render.failure_text(job, message, mention=mention),
                            "view": None,
                        },
                        nonce=f"retouch-{job.id}-failed",
                    )
            except (discord.HTTPException, DeliveryFailed) as exc:
                log.warning("job %d: could not tell the member it failed (%s)", job.id, exc)
        self._forget(job.id)

    async def _refuse_privately(self, job: Job, message: str) -> bool:
        """While the interaction lives, a failure concerns the member alone: the public status
        message is deleted first (a followup sent while it still "thinks" would replace it in
        public), then the member is told in a private followup. A private status message is
        simply edited by `_post`. Safe to repeat after a crash: the status is already gone (404)
        and the member gets the private notice again. False when this way is not open.
        """
        found = await self._webhook(job)
        if found is None or EditOptions.from_dict(job.options).private:
            return False
        webhook, status_id = found
        await self._attempt(job, "the status message", webhook.delete_message(status_id))
        told = await self._attempt(
            job,
            "a private followup",
            webhook.send(
                render.failure_text(job, message, mention=False),
                ephemeral=True,
                wait=True,
                allowed_mentions=render.NO_PINGS,
            ),
        )
        return told is not None

    async def _post(
        self, job: Job, build: _Builder, *, nonce: str, reuse_original: bool = False
    ) -> discord.Message:
        """Edit the original response, else post in the channel (never a private one), else DM.

        Each way is safe to repeat after a crash: editing the original twice leaves one message,
        and a channel or DM send carries a nonce Discord enforces, so a re-send within a few
        minutes returns the first message instead of posting a second. A route that is gone
        (404) or closed (403) passes to the next; any other refusal ends the delivery.
        """
        found = await self._webhook(job)
        if found is not None:
            webhook, message_id = found
            payload = build(False)
            edited = await self._attempt(
                job,
                "the interaction",
                webhook.edit_message(
                    message_id,
                    content=payload["content"],
                    attachments=payload.get("files", []),
                    view=payload.get("view", discord.utils.MISSING),
                    allowed_mentions=render.NO_PINGS,
                ),
            )
            if edited is not None:
                return edited
        if reuse_original:
            # The interaction is gone; if a crash came after Discord showed the result on the
            # original message, that message is the delivery, not a second post.
            existing = await self._already_delivered(job)
            if existing is not None:
                return existing
        if not EditOptions.from_dict(job.options).private:
            channel = self._bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            sent = await self._attempt(
                job,
                "the channel",
                channel.send(**build(True), allowed_mentions=render.pinging_only(job.user_id), nonce=nonce),
            )
            if sent is not None:
                return sent
        user = await self._attempt(job, "the member", self._bot.fetch_user(job.user_id))
        direct = await self._attempt(job, "a DM", user.send(**build(False), nonce=nonce)) if user else None
        if direct is None:
            raise DeliveryFailed("the channel and the member's DMs are closed to the bot")
        return direct

    async def _attempt(self, job: Job, route: str, call: Awaitable[_T]) -> _T | None:
        """The call's result; None when that route is gone or closed to the bot."""
        try:
            return await call
        except (discord.NotFound, discord.Forbidden) as exc:
            self._count(exc)
            log.info("job %d: %s is not available (%s); trying the next way", job.id, route, exc.status)
            return None
        except discord.HTTPException as exc:
            self._count(exc)
            raise DeliveryFailed(
                f"Discord refused {route} ({exc.status} {exc.code})", transient=exc.status >= 500
            ) from exc

    async def _already_delivered(self, job: Job) -> discord.Message | None:
        """The member's original message, when it already carries the result."""
        if job.status_message_id is None or EditOptions.from_dict(job.options).private:
            return None
        channel = self._bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        try:
            message = await channel.fetch_message(job.status_message_id)
        except discord.HTTPException:
            return None
        return message if message.attachments else None
