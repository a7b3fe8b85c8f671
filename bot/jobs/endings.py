"""How a job ends other than by delivery: failed, cancelled or deleted; and who waits for the end.

Every ending moves the row first (compare-and-set, see `JobRepository.move`), and only the
caller whose move succeeded releases the credits, deletes the files and tells the member, so
two endings racing for one job (a cancel and a failing poll) do each of those once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from bot.edits import member_message
from bot.jobs.access import JobHidden
from bot.jobs.core import Core
from bot.jobs.wakeups import RUNS
from bot.providers.base import ProviderError, Run
from storage.jobs import Job, JobState

log = logging.getLogger(__name__)

# How often `wait_settled` reads a job again, for an end in another process.
SETTLED_LOOK = 0.5


def run_of(job: Job) -> Run:
    """The host's handle on a submitted job, as stored with it."""
    assert job.provider is not None and job.run_id is not None
    return Run(job.provider, job.run_id, job.run_data)


def reference(job_id: int) -> str:
    """A tag that appears both in what the member is told and in the log line with the details."""
    return f"{job_id}-{secrets.token_hex(3)}"


class Endings:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._waiters: dict[int, list[asyncio.Future[Job]]] = {}

    async def fail(self, job: Job, error: ProviderError, *, member_text: str | None = None) -> None:
        log.warning("job %d failed at %s: %s (%s)", job.id, error.host or "?", error.message, error.kind)
        core = self._core
        moved = await core.repo.move(
            job.id,
            [JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.DELIVERING],
            JobState.FAILED,
            error_kind=error.kind.value,
            error=error.message,
            completed_at=self._core.clock.now(),
        )
        if moved is not None:
            await core.credits.release(job.id, reason=f"failed: {error.kind.value}")
            # Nothing builds on a failed edit (its message has no buttons), and members choose
            # what it wrote: left, free failures would fill the disk.
            await core.files.delete_job(job.id)
            await core.delivery.report_failure(moved, member_text or member_message(error))
            await core.repo.mark_notified(job.id)
            self.finished(moved)

    async def cancel(self, job_id: int) -> Job | None:
        """Stop an edit that has not started delivering; None when it is too late or already over.

        The row moves first, so a worker that is mid-submit or mid-poll finds it cancelled at
        its next step and stops; the host is then asked to stop the run where it can. The move
        puts the job under this process's lease until its credits are released, as a worker
        holds the jobs it ends: if this process dies in between, the lease lapses and another
        process's sweep releases them (`Recovery.sweep`).
        """
        core = self._core
        moved = await core.repo.move(
            job_id,
            [JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING],
            JobState.CANCELLED,
            completed_at=self._core.clock.now(),
            lease_owner=core.leases.owner,
            lease_until=core.leases.until(),
        )
        if moved is None:
            return None
        core.delivery.cancelled(moved)
        # The process working on it (maybe another) looks now, not at its next poll, and drops
        # the progress it was about to show over the member's "cancelled".
        await core.wakeups.notify(RUNS, str(job_id))
        await core.credits.release(job_id, reason="cancelled")
        await core.files.delete_job(job_id)
        await core.leases.release(job_id)
        log.info("job %d cancelled", job_id)
        if moved.run_id is not None and moved.provider is not None:
            await self.stop_run(run_of(moved))
        self.finished(moved)
        return moved

    async def delete(self, job: Job) -> list[tuple[int | None, int]]:
        """Delete a result for good: nothing shows it again, and its kept files go at once.

        Returns the (channel, message) of every message that showed it, for the caller to remove.
        """
        if not await self._core.repo.mark_deleted(job.id):
            raise JobHidden(job.id)
        await self._core.files.delete_job(job.id)
        messages = [(job.channel_id, message_id) for message_id in sorted(job.message_ids)]
        log.info("job %d deleted by its requester or a moderator", job.id)
        return messages + await self._core.repo.copies(job.id)

    async def stop_run(self, run: Run) -> None:
        try:
            stopped = await self._core.provider.cancel(run)
        except ProviderError as error:
            log.warning("could not cancel run %s at %s: %s", run.run_id, run.host, error.message)
            return
        if not stopped:
            log.info("%s cannot cancel run %s; its late result will be ignored", run.host, run.run_id)

    def finished(self, job: Job) -> None:
        """A job reached its final state just now: count it and wake whoever waits for it."""
        self._core.metrics.edits.labels(job.state.value, job.provider or "none").inc()
        self._notify_waiters(job)

    async def wait_settled(self, job_id: int) -> Job:
        """The job once it reaches a final state, whichever process ends it (for the CLI, a
        button pressed while its result is being recorded, and tests).

        An end in this process answers at once; an end in another process sharing the database
        is not announced here, so the row is read again every SETTLED_LOOK seconds.
        """
        waiter: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        waiting = self._waiters.setdefault(job_id, [])
        waiting.append(waiter)
        try:
            while True:
                job = await self._core.repo.get(job_id)
                if job is None:
                    raise KeyError(job_id)
                if job.state.final:
                    return job
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(waiter), SETTLED_LOOK)
        finally:
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting and self._waiters.get(job_id) is waiting:
                del self._waiters[job_id]

    def _notify_waiters(self, job: Job) -> None:
        for waiter in self._waiters.pop(job.id, []):
            if not waiter.done():
                waiter.set_result(job)
