"""This process's hold on the jobs it works on, so another process can tell when it died.

A job's lease names the process working on it and when that claim lapses. The process renews
all its leases together while it runs; when it stops on purpose it hands them back at once;
when it dies they lapse, and every process's takeover (`Recovery.take_over`) finishes the job.
On PostgreSQL the edits it acknowledged and has not yet written as jobs (its intake journal's
rows, see `bot.jobs.journal`) are held the same way and renewed with the jobs.
A lease also lapses at once, without waiting for its end, when it names a process on this
machine that is no longer running, or names this very process at its start (a restart that
kept its name, as the first process in a container does): such a holder can never renew it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import datetime, timedelta

from bot.runtime.clock import Clock
from bot.runtime.metrics import Metrics
from storage.claims import ClaimRepository, Owed
from storage.db import database_errors
from storage.intake_journal import IntakeJournalRepository
from storage.jobs import Job

log = logging.getLogger(__name__)


def process_name() -> str:
    """A lease name unique to this running process: its machine and its process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone(owner: str) -> bool:
    """Whether `owner` names a process on this machine that is no longer running."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists, under another user
    return False


class Leases:
    def __init__(
        self,
        claims: ClaimRepository,
        *,
        owner: str,
        seconds: float,
        clock: Clock,
        metrics: Metrics,
        journal: IntakeJournalRepository | None = None,
    ) -> None:
        self.owner = owner
        self.seconds = seconds
        self.clock = clock
        self._claims = claims
        self._metrics = metrics
        self._journal = journal

    @property
    def length(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def until(self) -> datetime:
        return self.clock.now() + self.length

    async def keep_renewing(self) -> None:
        """Renew every lease this process holds, three times a lease, so one slow renewal (a
        busy database) does not let them lapse."""
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                await self.renew()
            except database_errors():
                log.exception("could not renew this process's job leases; will try again")

    async def renew(self) -> None:
        """Push back the end of everything this process holds: its jobs, its journaled edits."""
        await self._claims.renew(self.owner, self.until())
        if self._journal is not None:
            await self._journal.renew(self.owner, self.until())

    async def release(self, job_id: int) -> None:
        """The job is finished, or left for whoever takes it over next."""
        try:
            await self._claims.release(job_id, self.owner)
        except database_errors():
            log.exception("job %d: could not release its lease; it lapses on its own", job_id)

    async def release_all(self) -> None:
        released = await self._claims.release_all(self.owner)
        if released:
            log.info("handed back %d unfinished jobs for another process to finish", released)

    def lapsed(self, owner: str | None, until: datetime | None, *, starting: bool) -> bool:
        """Whether no living process holds what `owner` leased until `until` (see the module's
        docstring)."""
        if owner is None or until is None:
            return True
        if until < self.clock.now():
            return True
        if owner == self.owner:
            return starting
        return _gone(owner)

    async def orphans(self, *, starting: bool) -> list[Job]:
        """Unfinished jobs whose holder is gone, each now held by this process."""
        taken = []
        for job in await self._claims.leased_or_in_flight():
            mine = await self.claim(job, starting=starting)
            if mine is not None:
                taken.append(mine)
        return taken

    async def claim(self, job: Job, *, starting: bool, owed: Owed | None = None) -> Job | None:
        """The job as read, now held by this process, if no living process held it (and a
        finished one only while it is still `owed` that); None when its holder renewed it,
        another process took it first, or it moved on. Whoever holds a job is the one process
        that acts on it; one that dies doing so lets go when its lease lapses."""
        if not self.lapsed(job.lease_owner, job.lease_until, starting=starting):
            return None
        mine = await self._claims.take_over(job, self.owner, self.until(), owed=owed)
        if mine is not None and job.lease_owner is not None and job.lease_owner != self.owner:
            log.info("job %d: taking over from %s, whose lease lapsed", job.id, job.lease_owner)
            self._metrics.lease_takeovers.inc()
        return mine
