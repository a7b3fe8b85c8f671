"""The line of waiting jobs, kept in the jobs table so every process serves one line.

One member's twenty edits must not starve everyone else, so members take turns: the order is a
ring of members (served members go to the back, newcomers join at the back), each with their
own oldest-first list, rebuilt from the rows (see `storage.claims`). A worker takes the job at
the front with a claim under this process's lease, and waits for a wake-up (`bot.jobs.wakeups`)
or the process's next look.

A process claims one job at a time, whatever its number of idle workers: claims across the
cluster take turns on one lock (the in-flight cap is counted under it), and each waiting claim
holds a pooled connection. With every idle worker of three processes looking on its own, 21
connections waited on that lock in the scaling benchmark, and 200 idle workers made 100 empty
claims a second per process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from bot.jobs.leases import Leases
from bot.runtime.metrics import Metrics
from storage.claims import ClaimRepository
from storage.jobs import Job

# Seconds between a process's looks for work that no wake-up announced (a notice lost while the
# shared wake-ups were down; a job another process put in line on SQLite), while it has idle workers.
LOOK_INTERVAL = 2.0


class Line:
    def __init__(
        self, claims: ClaimRepository, leases: Leases, metrics: Metrics, *, max_in_flight: int
    ) -> None:
        self._claims = claims
        self._leases = leases
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        # Idle workers, longest idle first, and whether a wake-up came while none was idle.
        self._idle: deque[asyncio.Future[None]] = deque()
        self._woken = False
        self._claiming = asyncio.Lock()
        self._look: asyncio.TimerHandle | None = None

    def wake(self, _payload: str = "") -> None:
        """A job was put in line (or handed back): one idle worker looks now.

        One, not all: with 200 workers idle, each new job woke every one of them into a claim
        that all but one lost, and those claims were most of the database's transactions. A
        worker whose claim succeeds wakes the next (`take`), so a burst is taken by a chain of
        claims, one per job plus the one that finds the line empty.
        """
        while self._idle:
            idle = self._idle.popleft()
            if not idle.done():
                idle.set_result(None)
                return
        self._woken = True

    async def take(self) -> Job:
        """The job whose turn it is, claimed for this process; waits while there is none or
        every host slot in the cluster is taken."""
        while True:
            # Cleared before looking, so a wake-up during the look is not lost.
            self._woken = False
            async with self._claiming:
                job = await self.claim()
            if job is not None:
                self.wake()  # there may be more in line
                return job
            if self._woken:
                continue
            loop = asyncio.get_running_loop()
            idle = loop.create_future()
            self._idle.append(idle)
            if self._look is None:
                self._look = loop.call_later(LOOK_INTERVAL, self._looked)
            try:
                await idle
            finally:
                with contextlib.suppress(ValueError):  # not there when a wake-up took it out
                    self._idle.remove(idle)

    def _looked(self) -> None:
        """Time for the process's look: one idle worker claims (and, finding work, wakes the next)."""
        self._look = None
        self.wake()

    async def claim(self) -> Job | None:
        """One attempt: the job whose turn it is, or None."""
        leases = self._leases
        started = leases.clock.monotonic()
        job = await self._claims.claim_next(
            leases.owner, clock=leases.clock.now, lease=leases.length, max_in_flight=self._max_in_flight
        )
        if job is not None:
            self._metrics.claim_latency.observe(leases.clock.monotonic() - started)
        return job

    async def order(self, *, first: int | None = None) -> list[int]:
        """Waiting job ids in the order they will be claimed (only the `first` few if given)."""
        return await self._claims.in_line(self._leases.clock.now(), first=first)
