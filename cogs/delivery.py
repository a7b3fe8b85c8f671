"""The job runner's voice in Discord: progress, results and failures.

While the interaction token lives (15 minutes) progress edits the member's original
"thinking" message. The result is a new message below it that mentions the member (an edited
message notifies nobody), a private followup for a private edit, and the status message becomes
a one-line pointer to it. A failure concerns the member alone: while the token lives a public
status message is withdrawn and the member told privately, after that in the channel with a
mention. If the channel is gone or closed to the bot, the member's DMs.

Progress is written beside the job, not in its path: `show_progress` returns at once, each
job's edits go out one at a time on a task of their own, and of those that pile up meanwhile
only the newest is sent. A result or a failure drops the progress still waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import discord

from bot.edits import TOKEN_LIFETIME, DeliveryFailed, EditOrder, Progress, Receipt, ResultFile
from bot.runtime.tasks import Supervisor
from cogs import render
from cogs.buttons import progress_view, result_message
from cogs.interactions import withdraw
from storage.jobs import Job, JobState

if TYPE_CHECKING:
    from cogs.app import Retouch

log = logging.getLogger(__name__)

# Builds a message's keyword arguments; called once per attempt because a discord.File is
# consumed by a send, and told whether the member must be mentioned (outside the interaction).
_Builder = Callable[[bool], dict[str, Any]]
_T = TypeVar("_T")

SAME_STAGE_INTERVAL = 5.0
# How many cancelled jobs are remembered, so that a worker's late progress is not shown.
CANCELLED_KEPT = 1024
# Seconds at least between two progress edits of one message.
PROGRESS_GAP = 1.0
# Seconds a stopping process waits for the pointers it is still making.
POINTER_GRACE = 5.0
_STAGE = {JobState.QUEUED: 0, JobState.SUBMITTING: 1, JobState.RUNNING: 2, JobState.DELIVERING: 3}


class DiscordDelivery:
    def __init__(self, bot: Retouch) -> None:
        self._bot = bot
        self._locks: dict[int, asyncio.Lock] = {}
        self._shown: dict[int, tuple[int, float]] = {}
        # Per job, the progress edit waiting to be sent (the newest), and the task sending them.
        self._waiting: dict[int, tuple[discord.Webhook, int, str]] = {}
        self._writers: dict[int, asyncio.Task[None]] = {}
        # When each job's last progress edit was sent (the clock's monotonic seconds).
        self._sent: dict[int, float] = {}
        # The latest cancelled jobs, oldest first.
        self._cancelled: OrderedDict[int, None] = OrderedDict()
        self._tasks = Supervisor()
        # Status messages being turned into pointers to their delivered results.
        self._pointers = Supervisor()

    async def stop(self) -> None:
        """Drop the progress edits not yet sent: the process is stopping. The pointers under way
        get a few seconds, since nothing sends them again once their edits are done."""
        await self._pointers.settle(POINTER_GRACE)
        await self._pointers.stop()
        await self._tasks.stop()

    def _count(self, error: discord.HTTPException) -> None:
        self._bot.metrics.discord_errors.labels(str(error.status)).inc()

    def _lock(self, job_id: int) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())

    def _forget(self, job_id: int) -> None:
        self._locks.pop(job_id, None)
        self._shown.pop(job_id, None)
        self._waiting.pop(job_id, None)
        self._sent.pop(job_id, None)

    async def _webhook(self, job: Job) -> tuple[discord.Webhook, int] | None:
        """The interaction's webhook and original message while its token is valid, else None.

        A crash can fall between Discord accepting the defer and the message id being written;
        the token still reaches that message as `@original` (the route discord.py itself uses
        for original responses), so its id is asked for then.
        """
        if job.interaction_token is None or job.application_id is None:
            return None
        if job.token_expires_at is None or job.token_expires_at <= self._bot.clock.now():
            return None
        webhook = self._followup(job.application_id, job.interaction_token)
        if job.status_message_id is not None:
            return webhook, job.status_message_id
        try:
            original = await webhook.fetch_message(cast(int, "@original"))
        except discord.HTTPException:
            return None
        return webhook, original.id

    def _followup(self, application_id: int, token: str) -> discord.Webhook:
        """An application webhook, as discord.py builds `interaction.followup`: only it may send
        private (ephemeral) followups."""
        return discord.Webhook.from_state(
            {"id": application_id, "type": 3, "token": token}, self._bot._connection
        )

    async def refuse(self, order: EditOrder, message: str) -> None:
        """Answered as `cogs.flow` answers a refusal found after the acknowledgement (`withdraw`),
        through the interaction's webhook while its token lives."""
        token, application_id, acked_at = order.interaction_token, order.application_id, order.acked_at
        expires = order.token_expires_at or (acked_at + TOKEN_LIFETIME if acked_at is not None else None)
        if token is None or application_id is None or expires is None or expires <= self._bot.clock.now():
            log.info("an edit refused at recovery cannot be answered any more: %s", message)
            return
        try:
            await withdraw(
                self._followup(application_id, token),
                cast(int, "@original"),
                render.refusal_text(order.prompt, message),
                private=order.options.private,
            )
        except discord.HTTPException as exc:
            self._count(exc)
            log.warning("an edit refused at recovery could not be told to its member (%s)", exc)

    def cancelled(self, job: Job) -> None:
        """Progress still waiting (up to a gap's worth) is dropped, and any shown later by a
        worker that has not yet seen the cancellation is ignored: shown after the cancellation
        itself, it would show the edit running again, with its Cancel button."""
        self._cancelled[job.id] = None
        while len(self._cancelled) > CANCELLED_KEPT:
            self._cancelled.popitem(last=False)
        self._forget(job.id)

    async def show_progress(self, job: Job, progress: Progress) -> None:
        if job.id in self._cancelled:
            return
        found = await self._webhook(job)
        if found is None:
            return
        webhook, message_id = found
        stage = _STAGE.get(progress.state, 0)
        # Updates can arrive out of order (the queue notice races the worker); never go back,
        # and within a stage edit at most every few seconds so a busy line does not spam.
        shown_stage, shown_at = self._shown.get(job.id, (-1, 0.0))
        now = self._bot.clock.monotonic()
        if stage < shown_stage or (stage == shown_stage and now - shown_at < SAME_STAGE_INTERVAL):
            return
        self._shown[job.id] = (stage, now)
        self._waiting[job.id] = (webhook, message_id, render.progress_text(job, progress))
        if job.id not in self._writers:
            self._writers[job.id] = self._tasks.spawn(self._write_progress(job.id), name=f"progress-{job.id}")

    async def _write_progress(self, job_id: int) -> None:
        lock = self._lock(job_id)
        clock = self._bot.clock
        try:
            while True:
                # Stages that pass within a gap are shown as the last of them: an edit through a
                # quick host went queued, sending and editing in under a second, three message
                # edits for nobody to read (and Discord limits a message's edits). The result,
                # arriving meanwhile, drops what waits.
                sent = self._sent.get(job_id)
                if sent is not None and (wait := PROGRESS_GAP - (clock.monotonic() - sent)) > 0:
                    await asyncio.sleep(wait)
                async with lock:
                    waiting = self._waiting.pop(job_id, None)
                    if waiting is None:
                        return
                    webhook, message_id, content = waiting
                    try:
                        await webhook.edit_message(message_id, content=content, view=progress_view(job_id))
                    except discord.HTTPException as exc:
                        self._count(exc)
                        log.info("job %d: progress update not shown (%s)", job_id, exc)
                    self._sent[job_id] = clock.monotonic()
        finally:
            del self._writers[job_id]
            if job_id not in self._shown:  # the job has ended (a cancel can end it mid-send)
                self._locks.pop(job_id, None)
                self._sent.pop(job_id, None)

    async def deliver(self, job: Job, files: Sequence[ResultFile]) -> Receipt:
        async with self._lock(job.id):
            self._waiting.pop(job.id, None)  # the result says more than any progress
            upscale = bool(self._bot.admission.upscale_offers(job))
            message = await self._post(
                job,
                lambda mention: result_message(
                    job.id,
                    render.result_text(job, files, mention=mention, now=self._bot.clock.now()),
                    [discord.File(f.path, filename=f.filename, spoiler=f.spoiler) for f in files],
                    upscale=upscale,
                    paint=self._bot.painter is not None,
                ),
                nonce=f"retouch-{job.id}",
                result=True,
            )
        # Beside the settlement, not before it: the member already has the result, and the
        # edit is charged and done without waiting for a cosmetic edit (or its retries).
        self._pointers.spawn(self._point_to(job, message), name=f"pointer-{job.id}")
        return Receipt(message.id, [attachment.url for attachment in message.attachments])

    async def _point_to(self, job: Job, result: discord.Message) -> None:
        """The status message becomes a one-line pointer to the result posted below it; only
        while the interaction lives (after that it cannot be edited), and never worth failing
        a delivered edit for."""
        try:
            async with self._lock(job.id):
                self._waiting.pop(job.id, None)
                await self._pointer(job, result)
        finally:
            self._forget(job.id)

    async def _pointer(self, job: Job, result: discord.Message) -> None:
        found = await self._webhook(job)
        if found is None or found[1] == result.id:
            return
        webhook, status_id = found
        try:
            await webhook.edit_message(
                status_id,
                content=render.pointer_text(job, job.guild_id, result.channel.id, result.id),
                attachments=[],
                view=None,
                allowed_mentions=render.NO_PINGS,
            )
        except discord.HTTPException as exc:
            self._count(exc)
            log.info("job %d: the status message was not turned into a pointer (%s)", job.id, exc)

    async def report_failure(self, job: Job, message: str) -> None:
        async with self._lock(job.id):
            self._waiting.pop(job.id, None)
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
        if found is None or job.options.private:
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

    async def _post(self, job: Job, build: _Builder, *, nonce: str, result: bool = False) -> discord.Message:
        """A result as a new message: in the channel, or for a private edit as a private
        followup; a failure by editing the original response, else in the channel. Then, for
        either, the original response, and last the member's DMs.

        A new message is what makes Discord notify the member (an edit notifies nobody), so a
        public result mentions them, unless they chose not (/notify). Each way is safe to repeat
        after a crash: editing the original twice leaves one message, and a channel or DM send
        carries a nonce Discord enforces, so a re-send within a few minutes returns the first
        message instead of posting a second. A private followup carries no nonce: a crash
        between sending it and recording it shows the member the result twice (charged once).
        A route that is gone (404) or closed (403) passes to the next; any other refusal ends
        the delivery.
        """
        options = job.options
        found = await self._webhook(job)
        if result and options.private and found is not None:
            followup = await self._attempt(
                job, "a private followup", found[0].send(**build(False), ephemeral=True, wait=True)
            )
            if followup is not None:
                return followup
        if result and not options.private:
            sent = await self._in_channel(job, build(options.mention), nonce, mention=options.mention)
            if sent is not None:
                return sent
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
        if result:
            # The interaction is gone; if a crash came after Discord showed the result on the
            # original message, that message is the delivery, not a second post.
            existing = await self._already_delivered(job)
            if existing is not None:
                return existing
        elif not options.private:
            posted = await self._in_channel(job, build(True), nonce, mention=True)
            if posted is not None:
                return posted
        user = await self._attempt(job, "the member", self._bot.fetch_user(job.user_id))
        direct = await self._attempt(job, "a DM", user.send(**build(False), nonce=nonce)) if user else None
        if direct is None:
            raise DeliveryFailed("the channel and the member's DMs are closed to the bot")
        return direct

    async def _in_channel(
        self, job: Job, payload: dict[str, Any], nonce: str, *, mention: bool
    ) -> discord.Message | None:
        channel = self._bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        allowed = render.pinging_only(job.user_id) if mention else render.NO_PINGS
        return await self._attempt(
            job, "the channel", channel.send(**payload, allowed_mentions=allowed, nonce=nonce)
        )

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
        if job.status_message_id is None or job.options.private:
            return None
        channel = self._bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        try:
            message = await channel.fetch_message(job.status_message_id)
        except discord.HTTPException:
            return None
        return message if message.attachments else None
