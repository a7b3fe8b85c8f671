"""Putting back on its path every job a process left unfinished: this one before a restart
(at start), or another one that died (its leases lapsed: `sweep`, every TAKEOVER_LOOK seconds),
and every edit such a process acknowledged without writing its job (its intake journal).

Safe to run any number of times, in any number of processes at once: each step looks for one
kind of leftover (an acknowledged edit with no row, a final job still holding credits, a
failure its member was never told, a job whose holder is gone) and what it does removes that
leftover. A job's leftover is acted on only by the process that claimed the job's lapsed lease
(compare-and-set), so one process does it; one that dies before it is done lets its claim lapse
in turn, and another does it then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.credits import CreditError
from bot.edits import INTERRUPTED, MEMBER_MESSAGES, EditOrder, NotTaken, TooManyJobs
from bot.jobs.core import Core
from bot.jobs.endings import Endings, reference, run_of
from bot.jobs.intake import Intake
from bot.jobs.journal import HandedOn
from bot.jobs.runner import Runner
from bot.jobs.wakeups import JOBS
from bot.providers.base import ErrorKind, RunFailed
from bot.runtime.tasks import Supervisor
from storage.claims import Owed
from storage.db import database_errors
from storage.jobs import Job, JobState

log = logging.getLogger(__name__)

# How many times a job's processing may begin (its submit, then each recovery that finds it in
# flight) before it is failed: a job whose processing kills the process ends after this many
# restarts instead of taking the bot down at every one.
MAX_STARTS = 4
# How often each process looks for leases that lapsed (seconds; a third of the lease if that is
# shorter). A lease lapses up to a whole lease after its holder's last renewal, so a dead
# process's edits are finished within the lease and this.
TAKEOVER_LOOK = 2.0

# Writes the job of an edit found in a journal, or raises why not (see `Admission.readmit`).
Readmit = Callable[[EditOrder], Awaitable[Job]]


class Recovery:
    def __init__(
        self, core: Core, intake: Intake, runner: Runner, endings: Endings, tasks: Supervisor
    ) -> None:
        self._core = core
        self._intake = intake
        self._runner = runner
        self._endings = endings
        self._tasks = tasks
        self.readmit: Readmit = self._as_journaled

    async def _as_journaled(self, order: EditOrder) -> Job:
        return await self._intake.record(order, self._intake.estimate(order.options))

    async def recover(self, *, starting: bool = False) -> None:
        """Put every unfinished job back on its path; safe to run any number of times.

        `starting`: this process has just started, so leases under its own name are left from
        before its restart (see `bot.jobs.leases`).
        """
        await self.sweep(starting=starting, everywhere=True)
        if self._core.journal is not None:
            await self._core.journal.forget_older()

    async def sweep(self, *, starting: bool = False, everywhere: bool = False) -> None:
        """Finish what processes that stopped left: credits still held by finished jobs,
        failures not told, unfinished jobs (`take_over`).

        `everywhere`: look at every finished job, not only those a process was ending when it
        stopped (still leased): jobs left before leases existed, at start.
        """
        core = self._core
        for job in await core.repo.final_with_open_hold(leased_only=not everywhere):
            # A crash between the final state change and the ledger entry: finish the latter,
            # then the rest of the ending in the order `Endings.fail` does it, under the one claim
            # (let go in between, a failure not told would no longer be leased, nor looked at).
            mine = await core.leases.claim(job, starting=starting, owed=Owed.SETTLEMENT)
            if mine is None:
                continue
            if mine.state is JobState.DONE:
                delivered = len(await core.repo.outputs(mine.id))
                await core.credits.settle(
                    mine.id, delivered_images=delivered, usd_micros=mine.usd_micros or None
                )
            else:
                await core.credits.release(mine.id, reason=f"{mine.state.value} (recovered)")
                await core.files.delete_job(mine.id)
            if mine.state is JobState.FAILED and mine.notified_at is None:
                await self._tell(mine)
            await core.leases.release(mine.id)
        for job in await core.repo.failed_unnotified(leased_only=not everywhere):
            mine = await core.leases.claim(job, starting=starting, owed=Owed.NOTICE)
            if mine is not None:
                await self._tell(mine)
                await core.leases.release(mine.id)
        await self.take_over(starting=starting)

    async def _tell(self, job: Job) -> None:
        """Tell the member their edit failed, once (the caller holds the job's claim)."""
        kind = ErrorKind(job.error_kind) if job.error_kind else ErrorKind.UNAVAILABLE
        await self._core.delivery.report_failure(
            job, MEMBER_MESSAGES[kind].format(detail=job.error or "unknown")
        )
        await self._core.repo.mark_notified(job.id)

    async def take_over(self, *, starting: bool = False) -> None:
        """Finish every unfinished job whose holder is gone: resume its host run (never
        submitting it again), deliver it, or put it back in line if it never reached a host;
        and write the job of every edit such a process acknowledged and did not write."""
        core = self._core
        back_in_line = await self._recover_journal(starting=starting)
        for job in await core.leases.orphans(starting=starting):
            if job.state is not JobState.QUEUED and job.attempts >= MAX_STARTS:
                await self._give_up_interrupted(job)
                await core.leases.release(job.id)
                continue
            log.info("recovering job %d from state %s", job.id, job.state)
            if job.state in (JobState.QUEUED, JobState.SUBMITTING):
                if job.state is JobState.SUBMITTING:
                    # The submit counts this start when it begins again.
                    await core.repo.move(job.id, [JobState.SUBMITTING], JobState.QUEUED, provider=None)
                await core.leases.release(job.id)
                back_in_line = True
            elif await core.repo.move(job.id, [job.state], job.state, attempts=job.attempts + 1):
                # Counted before anything is done with it, so a job that kills the process
                # part-way through is still counted when it does.
                self._tasks.spawn(self._runner.held(job.id), name=f"job-recover-{job.id}")
            else:
                await core.leases.release(job.id)  # it moved on meanwhile (a cancel)
        if back_in_line:
            await core.wakeups.notify(JOBS)

    async def keep_taking_over(self) -> None:
        """Look for jobs whose holder died every TAKEOVER_LOOK seconds: a dead process's jobs
        are finished, and the ones it was ending settled and told, within a lease and that."""
        while True:
            await asyncio.sleep(min(TAKEOVER_LOOK, self._core.leases.seconds / 3))
            try:
                await self.sweep()
            except database_errors():
                log.exception("looking for jobs to take over failed; will look again")

    async def _give_up_interrupted(self, job: Job) -> None:
        """A job whose processing began MAX_STARTS times and never finished: whatever stops it
        (a process crash, a restart loop) would stop it again, so it ends here, free."""
        tag = reference(job.id)
        log.error(
            "job %d was interrupted %d times in state %s (reference %s); it is failed and its credits released",
            job.id,
            job.attempts,
            job.state,
            tag,
        )
        if job.state is JobState.RUNNING:
            await self._endings.stop_run(run_of(job))
        await self._endings.fail(
            job,
            RunFailed(f"interrupted {job.attempts} times (reference {tag})", host="retouch"),
            member_text=INTERRUPTED.format(starts=job.attempts, reference=tag),
        )

    async def _recover_journal(self, *, starting: bool) -> bool:
        """Edits acknowledged just before their process died, with no job yet: write them now,
        in line; whether any was."""
        journal = self._core.journal
        if journal is None:
            return False
        recorded = False
        for order in await journal.recent(starting=starting):
            token = order.interaction_token
            if token is None:
                continue
            if await self._core.repo.find_by_token(token) is not None:
                await journal.withdraw(order)
                continue
            try:
                job = await self.readmit(order)
            except HandedOn:
                continue
            except (NotTaken, TooManyJobs, CreditError) as error:
                log.info("an edit acknowledged before its process stopped is refused: %s", error.message)
                # Told first: a crash in between tells the member twice, never not at all.
                await self._core.delivery.refuse(order, error.message)
                await journal.withdraw(order)
                continue
            log.info("job %d recovered from the journal", job.id)
            await self._core.leases.release(job.id)
            recorded = True
        return recorded
