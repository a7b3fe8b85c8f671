"""The life of an edit: queued → submitting → running → delivering → done (or failed).

Each step is written to the job row before the side effect that depends on it, so whatever
line a crash lands on, `recover()` finds the job in a state it knows how to finish. Discord is
reached only through the `Delivery` protocol, which the cogs implement.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import aiohttp

from bot import access, composite, image_costs, images, memory, sizes
from bot.access import Act, Actor, JobHidden
from bot.credits import Balance, CreditError, CreditService, Estimate, InsufficientCredits, MemberBlocked
from bot.edits import (
    BOT_ERROR,
    INTERRUPTED,
    MEMBER_MESSAGES,
    NSFW_BLOCKED,
    STORAGE_FULL,
    TOKEN_LIFETIME,
    Delivery,
    DeliveryFailed,
    EditOptions,
    EditOrder,
    EditsPaused,
    Progress,
    Receipt,
    ResultFile,
    TooManyJobs,
    member_message,
)
from bot.files import DownloadError, FileStore, StorageFull
from bot.inputs import InputPreparer
from bot.journal import Journal
from bot.links import FileLinks
from bot.metrics import Metrics
from bot.providers.base import (
    ContentRejected,
    EditRequest,
    EditResult,
    ErrorKind,
    InvalidRequest,
    Provider,
    ProviderError,
    Run,
    RunFailed,
    RunStatus,
    Unavailable,
)
from bot.queue import FairQueue
from storage.jobs import Job, JobOutput, JobRepository, JobState, NewJob, NewOutput, utcnow

log = logging.getLogger(__name__)

PRUNE_EVERY = timedelta(hours=6)
# Seconds to wait before trying again when Discord answers a result with a 5xx.
DELIVERY_RETRIES = (1.0, 5.0, 20.0)
# Seconds to wait before fetching a finished edit's results again after a failed download.
DOWNLOAD_RETRIES = (1.0, 3.0)
# Places in line worth updating as it moves; further back, the change would be noise.
ANNOUNCED_PLACES = 3
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
PROGRESS_INTERVAL = 10.0
# How many times a job's processing may begin (its submit, then each recovery that finds it in
# flight) before it is failed: a job whose processing kills the process ends after this many
# restarts instead of taking the bot down at every one.
MAX_STARTS = 4


def _run_of(job: Job) -> Run:
    """The host's handle on a submitted job, as stored with it."""
    assert job.provider is not None and job.run_id is not None
    return Run(job.provider, job.run_id, job.run_data)


def _reference(job_id: int) -> str:
    """A tag that appears both in what the member is told and in the log line with the details."""
    return f"{job_id}-{secrets.token_hex(3)}"


def _unusable(problem: Exception) -> str:
    """Mask problems are already whole sentences for the member; file problems are a clause."""
    text = str(problem)
    return text if text.endswith(".") else f"An image could not be used: {text}; try another one."


class JobService:
    def __init__(
        self,
        *,
        repo: JobRepository,
        provider: Provider,
        credits: CreditService,
        usd_per_image: Mapping[str, float],
        files: FileStore,
        session: aiohttp.ClientSession,
        concurrency: int,
        max_per_member: int = 3,
        max_per_server: int = 20,
        poll_interval: float,
        poll_interval_max: float,
        deadline: float,
        callback_url: str | None = None,
        metrics: Metrics | None = None,
        cdn_hosts: Collection[str] | None = None,
        links: FileLinks | None = None,
        journal: Journal | None = None,
        retention: timedelta = timedelta(days=30),
    ) -> None:
        self._repo = repo
        self._provider = provider
        self._credits = credits
        self._usd_per_image = usd_per_image
        self._files = files
        self._session = session
        self._concurrency = concurrency
        self._max_per_member = max_per_member
        self._max_per_server = max_per_server
        self._poll_interval = poll_interval
        self._poll_interval_max = poll_interval_max
        self._deadline = deadline
        self._callback_url = callback_url
        self._journal = journal
        self._inputs = InputPreparer(files=files, session=session, cdn_hosts=cdn_hosts, links=links)
        self._retention = retention
        self.metrics = metrics or Metrics()
        self.metrics.watch_queue(lambda: len(self._queue))
        self._wakeups: dict[int, asyncio.Event] = {}
        self._queue = FairQueue()
        self._workers: list[asyncio.Task[None]] = []
        self._delivery: Delivery | None = None
        self._waiters: dict[int, list[asyncio.Future[Job]]] = {}
        self.accepting = False
        # The owner's switch for every server at once; running edits still finish.
        self.paused = False

    @property
    def resolutions(self) -> frozenset[str]:
        """The resolutions some configured host can make, so 2K/4K are offered only where real."""
        return self._provider.resolutions

    @property
    def image_sizes(self) -> frozenset[str]:
        """The size choices some configured host makes within the model's limits."""
        return self._provider.image_sizes

    @property
    def delivery(self) -> Delivery:
        if self._delivery is None:
            raise RuntimeError("JobService.start() was not called")
        return self._delivery

    async def start(self, delivery: Delivery) -> None:
        """Recover what a previous process left, then begin serving the line."""
        self._delivery = delivery
        await self.recover()
        self._workers += [
            asyncio.create_task(self._work(), name=f"job-worker-{n}") for n in range(self._concurrency)
        ]
        self._workers.append(asyncio.create_task(self._prune_forever(), name="prune-files"))
        self.accepting = True

    async def stop(self) -> None:
        """Stop taking edits and drop the workers; unfinished jobs stay in the database for recovery."""
        self.accepting = False
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def estimate(self, options: EditOptions) -> Estimate:
        """What an edit with these options costs, priced at the first host's rates."""
        return self._credits.estimate(
            quality=options.quality,
            resolution=options.resolution,
            count=options.count,
            usd_per_image=self._usd_per_image,
        )

    async def preflight(self, order: EditOrder, estimate: Estimate) -> Balance:
        """Every refusal that can be known before the job exists, so it can be answered privately.

        Raises EditsPaused, TooManyJobs or a CreditError; returns the member's balance, which
        the caller uses to decide whether to ask for confirmation.
        """
        if not self.accepting or self.paused:
            raise EditsPaused
        await self.check_limits(order.user_id, order.guild_id)
        if await self._credits.is_blocked(order.credit_guild, order.user_id):
            raise MemberBlocked
        balance = await self._credits.balance(order.credit_guild, order.user_id, order.role_ids)
        if estimate.credits > balance.available:
            raise InsufficientCredits(estimate.credits, balance.available, balance.refills_at)
        return balance

    async def submit(self, order: EditOrder, estimate: Estimate) -> Job:
        """`create` then `enqueue`, for callers with no Discord message to wait for."""
        job = await self.create(order, estimate)
        return await self.enqueue(job, order.status_message_id)

    async def note(self, order: EditOrder) -> None:
        """Journal an edit about to be acknowledged, so a crash before its row still runs it."""
        if self._journal is not None:
            await self._journal.add(order)

    async def unnote(self, order: EditOrder) -> None:
        """The journaled edit ended without a job; recovery must leave it alone."""
        if self._journal is not None:
            await self._journal.withdraw(order)

    async def create(self, order: EditOrder, estimate: Estimate) -> Job:
        """Check the in-flight limits, write the job row and reserve its credits in one
        transaction, not yet in line.

        A crash after this finds the job at start and runs it (before it, the journal does). If
        the limits or the reservation refuse it (TooManyJobs, a CreditError), the row is rolled
        back with it and nothing is left behind.
        """
        if not self.accepting or self.paused:
            raise EditsPaused
        return await self._create(order, estimate)

    async def _create(self, order: EditOrder, estimate: Estimate) -> Job:
        parent = None if order.parent_id is None else await self._repo.get(order.parent_id)
        if order.parent_id is not None and (
            parent is None or not access.visible(parent, Actor(order.user_id, order.guild_id))
        ):
            # "Edit image" on a result posted before this database existed names a job it never had;
            # and a chain never links to an edit its member could not see.
            order = replace(order, parent_id=None, parent_output=None)
        async with self._repo.transaction():
            # Counted under the write lock with the insert: counted before it, a burst of
            # simultaneous edits all saw room for one more and all went in.
            await self.check_limits(order.user_id, order.guild_id)
            job = await self._insert(order, estimate)
            await self._credits.reserve(
                guild_id=order.credit_guild,
                user_id=order.user_id,
                role_ids=order.role_ids,
                job_id=job.id,
                estimate=estimate,
            )
        return job

    async def enqueue(self, job: Job, status_message_id: int | None) -> Job:
        """Put a created job in line once its progress message exists, and show its place."""
        if status_message_id is not None and status_message_id != job.status_message_id:
            await self._repo.set_status_message(job.id, status_message_id)
            job = replace(job, status_message_id=status_message_id)
        await self._queue.put(job.user_id, job.id)
        log.info("job %d queued for user %d in guild %s", job.id, job.user_id, job.guild_id)
        place = self._queue.position(job.id)
        await self.delivery.show_progress(job, Progress(JobState.QUEUED, queue_position=place))
        return job

    async def _insert(self, order: EditOrder, estimate: Estimate) -> Job:
        return await self._repo.insert(
            NewJob(
                guild_id=order.guild_id,
                channel_id=order.channel_id,
                user_id=order.user_id,
                prompt=order.prompt,
                options=order.options.to_dict(),
                inputs=[image.to_dict() for image in order.images],
                mask=order.mask.to_dict() if order.mask is not None else None,
                kind=order.kind,
                parent_id=order.parent_id,
                parent_output=order.parent_output,
                application_id=order.application_id,
                interaction_token=order.interaction_token,
                status_message_id=order.status_message_id,
                token_expires_at=utcnow() + TOKEN_LIFETIME if order.interaction_token else None,
                credits_estimated=estimate.credits,
            )
        )

    async def check_limits(self, user_id: int, guild_id: int | None) -> None:
        """Raise TooManyJobs when the member or the server has no room for another edit.

        Outside a transaction this is only an early answer (`preflight`); `_create` asks again
        under the write lock, where the answer holds until the job row is in.
        """
        member_open, server_open = await self._repo.count_open(user_id, guild_id)
        if member_open >= self._max_per_member:
            raise TooManyJobs("member", self._max_per_member)
        if guild_id is not None and server_open >= self._max_per_server:
            raise TooManyJobs("server", self._max_per_server)

    async def load(self, guild_id: int | None = None) -> tuple[int, int]:
        """Edits waiting in line, and past it (being submitted, running at a host, or being
        delivered): in every server, or in one, which is all a server's admin may see."""
        counts = await self._repo.count_by_state(guild_id)
        in_flight = sum(
            counts.get(state, 0) for state in (JobState.SUBMITTING, JobState.RUNNING, JobState.DELIVERING)
        )
        return counts.get(JobState.QUEUED, 0), in_flight

    def queue_position(self, job_id: int) -> int | None:
        return self._queue.position(job_id)

    async def get(self, job_id: int) -> Job | None:
        return await self._repo.get(job_id)

    async def acting_on(self, job_id: int, actor: Actor, act: Act, *, message_id: int | None = None) -> Job:
        """The job, when `actor` may do `act` on it (see `access.check`); a button's act is also
        bound to the message it was pressed on, which must be one that carries this job.

        Raises JobHidden or ActRefused, whose messages are what the member is told.
        """
        job = access.check(await self._repo.get(job_id), actor, act, job_id)
        if message_id is not None and not await self._repo.carries(job_id, message_id):
            raise JobHidden(job_id)
        return job

    async def shown(self, job: Job, channel_id: int | None, message_id: int) -> None:
        """A copy of the result was posted again (/show): its buttons act on this job too."""
        await self._repo.add_message(job.id, channel_id, message_id)

    async def delete(self, job: Job) -> list[tuple[int | None, int]]:
        """Delete a result for good: nothing shows it again, and its kept files go at once.

        Returns the (channel, message) of every message that showed it, for the caller to remove.
        """
        if not await self._repo.mark_deleted(job.id):
            raise JobHidden(job.id)
        await self._files.delete_job(job.id)
        messages = [(job.channel_id, message_id) for message_id in sorted(job.message_ids)]
        log.info("job %d deleted by its requester or a moderator", job.id)
        return messages + await self._repo.copies(job.id)

    async def recent(self, user_id: int, guild_id: int | None, *, limit: int = 10) -> list[Job]:
        """The member's latest edits in this server (or in DMs), the ones /show can bring back here."""
        return await self._repo.recent(user_id, guild_id, limit=limit)

    async def outputs(self, job_id: int) -> list[JobOutput]:
        return await self._repo.outputs(job_id)

    async def kept_outputs(self, job_id: int) -> list[Path]:
        """The job's result files still on disk (retention may have pruned them)."""
        paths = [Path(o.path) for o in await self._repo.outputs(job_id) if o.path is not None]
        return await asyncio.to_thread(lambda: [path for path in paths if path.exists()])

    async def chain(self, job_id: int, actor: Actor, *, limit: int = 10) -> list[Job | None]:
        """The edits this one continued from, nearest first, so a chain can be retraced; an edit
        `actor` may not see (another member's private one, a deleted one) is None, a gap."""
        found: list[Job | None] = []
        job = await self._repo.get(job_id)
        while job is not None and job.parent_id is not None and len(found) < limit:
            job = await self._repo.get(job.parent_id)
            if job is not None:
                found.append(job if access.visible(job, actor) else None)
        return found

    async def wait_settled(self, job_id: int) -> Job:
        """The job once it reaches a final state (for the CLI, and for tests that need the end)."""
        waiter: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(waiter)
        job = await self._repo.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.state.final:
            self._notify_waiters(job)
        return await waiter

    async def cancel(self, job_id: int) -> Job | None:
        """Stop an edit that has not started delivering; None when it is too late or already over.

        The row moves first, so a worker that is mid-submit or mid-poll finds it cancelled at
        its next step and stops; the host is then asked to stop the run where it can.
        """
        self._queue.remove(job_id)
        moved = await self._repo.move(
            job_id,
            [JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING],
            JobState.CANCELLED,
            completed_at=utcnow(),
        )
        if moved is None:
            return None
        await self._credits.release(job_id, reason="cancelled")
        await self._files.delete_job(job_id)
        log.info("job %d cancelled", job_id)
        if moved.run_id is not None and moved.provider is not None:
            await self._stop_run(_run_of(moved))
        self._finished(moved)
        return moved

    async def _stop_run(self, run: Run) -> None:
        try:
            stopped = await self._provider.cancel(run)
        except ProviderError as error:
            log.warning("could not cancel run %s at %s: %s", run.run_id, run.host, error.message)
            return
        if not stopped:
            log.info("%s cannot cancel run %s; its late result will be ignored", run.host, run.run_id)

    async def run_update(self, host: str, run_id: str) -> bool:
        """A host says a run changed: poll it now rather than at the next interval.

        The callback's own body is never trusted for the outcome; the poll asks the host
        through its authenticated API, so a forged or replayed callback costs one request.
        False when no running job has that run.
        """
        job = await self._repo.find_by_run(host, run_id)
        if job is None or job.state is not JobState.RUNNING:
            return False
        self._wakeups.setdefault(job.id, asyncio.Event()).set()
        return True

    def _observe(self, host: str, operation: str, started: float, error: ProviderError | None = None) -> None:
        self.metrics.host_latency.labels(host, operation).observe(time.monotonic() - started)
        if error is not None:
            self.metrics.host_errors.labels(host, error.kind.value).inc()

    def _finished(self, job: Job) -> None:
        """A job reached its final state just now: count it and wake whoever waits for it."""
        self.metrics.edits.labels(job.state.value, job.provider or "none").inc()
        self._notify_waiters(job)

    def _notify_waiters(self, job: Job) -> None:
        for waiter in self._waiters.pop(job.id, []):
            if not waiter.done():
                waiter.set_result(job)

    async def recover(self) -> None:
        """Put every unfinished job back on its path; safe to run any number of times."""
        await self._recover_journal()
        for job in await self._repo.final_with_open_hold():
            # A crash between the final state change and the ledger entry: finish the latter.
            if job.state is JobState.DONE:
                delivered = len(await self._repo.outputs(job.id))
                await self._credits.settle(
                    job.id, delivered_images=delivered, usd_micros=job.usd_micros or None
                )
            else:
                await self._credits.release(job.id, reason=f"{job.state.value} (recovered)")
                await self._files.delete_job(job.id)
        for job in await self._repo.failed_unnotified():
            kind = ErrorKind(job.error_kind) if job.error_kind else ErrorKind.UNAVAILABLE
            await self.delivery.report_failure(
                job, MEMBER_MESSAGES[kind].format(detail=job.error or "unknown")
            )
            await self._repo.mark_notified(job.id)
        for job in await self._repo.open_jobs():
            if job.state is not JobState.QUEUED and job.attempts >= MAX_STARTS:
                await self._give_up_interrupted(job)
                continue
            log.info("recovering job %d from state %s", job.id, job.state)
            if job.state in (JobState.QUEUED, JobState.SUBMITTING):
                if job.state is JobState.SUBMITTING:
                    # The submit counts this start when it begins again.
                    await self._repo.move(job.id, [JobState.SUBMITTING], JobState.QUEUED)
                await self._queue.put(job.user_id, job.id)
            elif await self._repo.move(job.id, [job.state], job.state, attempts=job.attempts + 1):
                # Counted before anything is done with it, so a job that kills the process
                # part-way through is still counted when it does.
                self._workers.append(asyncio.create_task(self._guarded(job.id), name=f"job-recover-{job.id}"))

    async def _give_up_interrupted(self, job: Job) -> None:
        """A job whose processing began MAX_STARTS times and never finished: whatever stops it
        (a process crash, a restart loop) would stop it again, so it ends here, free."""
        reference = _reference(job.id)
        log.error(
            "job %d was interrupted %d times in state %s (reference %s); it is failed and its credits released",
            job.id,
            job.attempts,
            job.state,
            reference,
        )
        if job.state is JobState.RUNNING:
            await self._stop_run(_run_of(job))
        await self._fail(
            job,
            RunFailed(f"interrupted {job.attempts} times (reference {reference})", host="retouch"),
            member_text=INTERRUPTED.format(starts=job.attempts, reference=reference),
        )

    async def prune_files(self) -> int:
        """Delete finished edits' files past retention, oldest first above the size cap."""
        removed = await self._files.prune(older_than=(utcnow() - self._retention).timestamp())
        if removed:
            log.info("pruned the files of %d old edits", removed)
        return removed

    async def _recover_journal(self) -> None:
        """Edits acknowledged just before a crash, with no job yet: create and run them now."""
        if self._journal is None:
            return
        for order in await self._journal.recent():
            token = order.interaction_token
            if token is None or await self._repo.find_by_token(token) is not None:
                continue
            try:
                job = await self._create(order, self.estimate(order.options))
            except (TooManyJobs, CreditError) as error:
                log.warning("an edit acknowledged before a restart could not start: %s", error)
                continue
            log.info("job %d recovered from the journal", job.id)
            await self._queue.put(job.user_id, job.id)
        await self._journal.forget_older()

    async def _prune_forever(self) -> None:
        while True:
            if self._journal is not None:
                await self._journal.forget_older()
            await self.prune_files()
            await asyncio.sleep(PRUNE_EVERY.total_seconds())

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            await self._announce_places()
            await self._guarded(job_id)

    async def _announce_places(self) -> None:
        """The line moved: tell the first few waiting members their new place."""
        for place, job_id in enumerate(self._queue.order()[:ANNOUNCED_PLACES], start=1):
            job = await self._repo.get(job_id)
            if job is not None and job.state is JobState.QUEUED:
                await self.delivery.show_progress(job, Progress(JobState.QUEUED, queue_position=place))

    async def _guarded(self, job_id: int) -> None:
        """Process a job; whatever escapes the processing ends the job rather than stranding it.

        An unexpected exception would happen again on every try (a crafted input, a full disk),
        so the job fails at once, free, and the traceback is logged once with the reference the
        member is given. Only a database error leaves the job as it is: the failure could not be
        recorded either, and recovery, which counts its starts, takes it up again.
        """
        try:
            await self._process(job_id)
        except asyncio.CancelledError:
            raise
        except sqlite3.Error:
            log.exception("job %d: the database failed; it is left for recovery", job_id)
        except StorageFull as exc:
            log.error("job %d: %s", job_id, exc)
            await self._give_up(job_id, Unavailable(str(exc), host="retouch"), STORAGE_FULL)
        except Exception as exc:
            reference = _reference(job_id)
            log.exception(
                "job %d crashed (reference %s); it is failed and its credits released", job_id, reference
            )
            error = RunFailed(f"unexpected {type(exc).__name__} (reference {reference})", host="retouch")
            await self._give_up(job_id, error, BOT_ERROR.format(reference=reference))

    async def _give_up(self, job_id: int, error: ProviderError, member_text: str) -> None:
        try:
            job = await self._repo.get(job_id)
            if job is not None:
                await self._fail(job, error, member_text=member_text)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %d could not be failed; it is left for recovery", job_id)

    async def _process(self, job_id: int) -> None:
        job = await self._repo.get(job_id)
        if job is None or job.state.final:
            return
        if job.state is JobState.QUEUED:
            job = await self._submit(job)
        if job is not None and job.state is JobState.RUNNING:
            job = await self._wait(job)
        if job is not None and job.state is JobState.DELIVERING:
            await self._deliver(job)

    async def _submit(self, job: Job) -> Job | None:
        moved = await self._repo.move(
            job.id, [JobState.QUEUED], JobState.SUBMITTING, attempts=job.attempts + 1
        )
        if moved is None:
            return None
        await self.delivery.show_progress(moved, Progress(JobState.SUBMITTING))
        options = EditOptions.from_dict(moved.options)
        try:
            prepared = await self._inputs.prepare(moved)
            await self._repo.set_inputs(moved.id, prepared.kept)
        except (DownloadError, images.ImageProblem) as exc:
            await self._fail(moved, InvalidRequest(str(exc), host="discord"), member_text=_unusable(exc))
            return None
        try:
            dimensions = sizes.dimensions(options.image_size, options.resolution, prepared.first_size)
        except ValueError as exc:
            await self._fail(moved, InvalidRequest(str(exc), host="retouch"))
            return None
        request = EditRequest(
            job_id=moved.id,
            prompt=moved.prompt,
            images=prepared.references,
            mask=prepared.mask,
            quality=options.quality,
            image_size=options.image_size,
            resolution=options.resolution,
            count=options.count,
            output_format=options.output_format,
            dimensions=dimensions,
        )
        started = time.monotonic()
        try:
            run = await self._provider.submit(request, callback_url=self._callback_url)
        except ProviderError as error:
            self._observe(error.host or "unknown", "submit", started, error)
            await self._fail(moved, error)
            return None
        self._observe(run.host, "submit", started)
        running = await self._repo.move(
            moved.id,
            [JobState.SUBMITTING],
            JobState.RUNNING,
            provider=run.host,
            run_id=run.run_id,
            run_data=run.data,
            submitted_at=utcnow(),
        )
        if running is None:
            # Cancelled while the submit was in flight: the run exists, so stop it.
            await self._stop_run(run)
        return running

    async def _wait(self, job: Job) -> Job | None:
        try:
            return await self._poll(job)
        finally:
            self._wakeups.pop(job.id, None)

    async def _poll(self, job: Job) -> Job | None:
        """Ask the host until the run ends, backing off, or sooner when a callback says so."""
        run = _run_of(job)
        started = job.submitted_at or job.created_at
        interval = self._poll_interval
        last_shown = 0.0
        while True:
            current = await self._repo.get(job.id)
            if current is None or current.state is not JobState.RUNNING:
                return None  # cancelled (or finished by a callback) while we waited
            elapsed = (utcnow() - started).total_seconds()
            if elapsed > self._deadline:
                await self._stop_run(run)
                await self._fail(job, Unavailable(f"no result after {self._deadline:g} s", host=run.host))
                return None
            asked = time.monotonic()
            try:
                state = await self._provider.status(run)
            except ProviderError as error:
                self._observe(run.host, "status", asked, error)
                if error.kind not in (ErrorKind.UNAVAILABLE, ErrorKind.RATE_LIMITED):
                    await self._fail(job, error)
                    return None
                log.warning("job %d: polling %s failed (%s); will retry", job.id, run.host, error.message)
            else:
                self._observe(run.host, "status", asked)
                if state.status.final:
                    return await self._finish_run(job, state.result, state.error, state.status)
            if time.monotonic() - last_shown >= PROGRESS_INTERVAL:
                last_shown = time.monotonic()
                await self.delivery.show_progress(job, Progress(JobState.RUNNING, elapsed=elapsed))
            wakeup = self._wakeups.setdefault(job.id, asyncio.Event())
            try:
                await asyncio.wait_for(wakeup.wait(), interval)
            except TimeoutError:
                interval = min(interval * 1.5, self._poll_interval_max)
            wakeup.clear()

    async def _finish_run(
        self, job: Job, result: EditResult | None, error: ProviderError | None, status: RunStatus
    ) -> Job | None:
        if result is None:
            await self._fail(job, error or Unavailable(f"the run ended {status}", host=job.provider or ""))
            return None
        moved = await self._repo.move(
            job.id, [JobState.RUNNING], JobState.DELIVERING, usd_micros=result.usd_micros or 0
        )
        if moved is None:
            return None
        return moved if await self._fetch_outputs(moved, result) else None

    async def _fetch_outputs(self, job: Job, result: EditResult | None = None) -> bool:
        """Download the outputs to disk; when a crash lost them, ask the host for the result again.

        False when the job had to be failed instead (the member has been told).
        """
        for pause in (*DOWNLOAD_RETRIES, None):
            try:
                if result is None:
                    result = await self._provider.result(_run_of(job))
                await self._store_outputs(job, result)
            except ProviderError as error:
                await self._fail(job, error)
                return False
            except (DownloadError, images.ImageProblem) as exc:
                # The host finished the edit: a dropped download is worth a few more tries, with
                # the result asked for again in case its short-lived URLs have changed.
                if pause is None or isinstance(exc, images.ImageProblem):
                    log.warning("job %d: fetching the result failed: %s", job.id, exc)
                    await self._fail(
                        job,
                        Unavailable(f"the result could not be downloaded: {exc}", host=job.provider or ""),
                    )
                    return False
                log.info("job %d: fetching the result failed (%s); trying again in %g s", job.id, exc, pause)
                await asyncio.sleep(pause)
                result = None
            else:
                return True
        return False

    async def _store_outputs(self, job: Job, result: EditResult) -> None:
        """Every output to disk first, then all their rows in one transaction: a crash between
        two downloads leaves no rows, so recovery fetches them all again rather than a part."""
        stored = []
        for idx, output in enumerate(result.images):
            # Results stream to disk rather than sit in memory: there may be hundreds at 4K.
            fetched = self._files.output_path(job.id, idx, "download")
            if output.data is not None:
                await self._files.write(fetched, output.data)
            elif output.url is not None:
                await self._files.download_to(self._session, output.url, fetched, max_bytes=MAX_OUTPUT_BYTES)
            else:
                raise DownloadError("the host listed an output without a URL or data")
            kept = await self._keep_outside_the_mask(job, fetched)
            # A burst of 4K results checked at once was most of the bot's peak memory; the budget
            # lets as many run as their pixels allow.
            info = await memory.shared().run(image_costs.inspect_cost, images.inspect, fetched)
            path = self._files.output_path(job.id, idx, info.extension)
            await self._files.rename(fetched, path)
            stored.append(
                NewOutput(
                    idx=idx,
                    source_url=output.url,
                    path=str(path),
                    content_type=info.content_type,
                    width=info.width,
                    height=info.height,
                    size=info.size,
                    nsfw=result.nsfw,
                    mask_kept=kept is not None,
                    changed_outside=kept,
                )
            )
        await self._repo.add_outputs(job.id, stored)

    async def _keep_outside_the_mask(self, job: Job, fetched: Path) -> float | None:
        """With a mask, the output laid over the original through it, in place of what the host
        sent (see `bot.composite`); returns the share of pixels outside the mask that the host had
        changed, or None when there is no mask or the output's shape differs and stands as made."""
        original = job.inputs[0].get("path") if job.inputs else None
        mask = self._inputs.mask_ready(job.id)
        if job.mask is None or original is None or not await asyncio.to_thread(mask.exists):
            return None
        done = await memory.shared().run(
            image_costs.composite_cost, composite.composite, Path(original), fetched, mask
        )
        if done.data is None:
            log.info(
                "job %d: the output's shape differs from the original's; it is delivered as made", job.id
            )
            return None
        await self._files.write(fetched, done.data)
        log.info(
            "job %d: kept the original outside the mask (the host changed %.1f%% there)",
            job.id,
            done.changed_outside * 100,
        )
        return done.changed_outside

    async def _deliver(self, job: Job) -> None:
        options = EditOptions.from_dict(job.options)
        limit = options.upload_limit
        outputs = await self._repo.outputs(job.id)
        if not outputs:
            if not await self._fetch_outputs(job):
                return
            outputs = await self._repo.outputs(job.id)
        flagged = any(output.nsfw for output in outputs)
        shown = options.shows_nsfw() if flagged else True
        if shown is None:
            await self._fail(
                job,
                ContentRejected("the host flagged the result as NSFW", host=job.provider or ""),
                member_text=NSFW_BLOCKED,
            )
            return
        files = []
        for output in outputs:
            assert output.path is not None
            path = Path(output.path)
            info = images.ImageInfo(
                output.content_type or "image/png", output.width or 0, output.height or 0, output.size or 0
            )
            shrunk = info.size > limit
            if shrunk:
                # Only a result over the limit is read back into memory, to be re-encoded.
                fitted = await memory.shared().run(
                    image_costs.fit_cost, images.fit_under, await self._files.read(path), limit
                )
                info = fitted.info
                path = path.with_name(f"fitted-{output.idx}.{info.extension}")
                await self._files.write(path, fitted.data)
            files.append(
                ResultFile(
                    path=path,
                    filename=f"retouch-{job.id}-{output.idx + 1}.{info.extension}",
                    content_type=info.content_type,
                    width=info.width,
                    height=info.height,
                    size=info.size,
                    shrunk=shrunk,
                    spoiler=flagged and not shown,
                )
            )
        receipt = await self._deliver_with_retries(job, files)
        if receipt is None:
            return
        await self._repo.set_output_urls(job.id, receipt.urls)
        charged = await self._credits.settle(
            job.id, delivered_images=len(files), usd_micros=job.usd_micros or None
        )
        self.metrics.credits_spent.inc(charged)
        self.metrics.usd_spent.inc(job.usd_micros / 1_000_000)
        done = await self._repo.move(
            job.id,
            [JobState.DELIVERING],
            JobState.DONE,
            result_message_id=receipt.message_id,
            completed_at=utcnow(),
        )
        if done is not None:
            log.info("job %d delivered as message %d", job.id, receipt.message_id)
            self._finished(done)

    async def _deliver_with_retries(self, job: Job, files: Sequence[ResultFile]) -> Receipt | None:
        """Post the result, waiting out Discord's own outages a few times; None when the edit had
        to be failed instead (refunded, and the member told where possible)."""
        for pause in (*DELIVERY_RETRIES, None):
            try:
                return await self.delivery.deliver(job, files)
            except DeliveryFailed as exc:
                if not exc.transient or pause is None:
                    await self._fail(
                        job, Unavailable(f"the result could not be posted: {exc}", host="discord")
                    )
                    return None
                log.warning("job %d: delivery failed (%s); retrying in %g s", job.id, exc, pause)
                await asyncio.sleep(pause)
        return None

    async def _fail(self, job: Job, error: ProviderError, *, member_text: str | None = None) -> None:
        log.warning("job %d failed at %s: %s (%s)", job.id, error.host or "?", error.message, error.kind)
        moved = await self._repo.move(
            job.id,
            [JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.DELIVERING],
            JobState.FAILED,
            error_kind=error.kind.value,
            error=error.message,
            completed_at=utcnow(),
        )
        if moved is not None:
            await self._credits.release(job.id, reason=f"failed: {error.kind.value}")
            # Nothing builds on a failed edit (its message has no buttons), and members choose
            # what it wrote: left, free failures would fill the disk.
            await self._files.delete_job(job.id)
            await self.delivery.report_failure(moved, member_text or member_message(error))
            await self._repo.mark_notified(job.id)
            self._finished(moved)
