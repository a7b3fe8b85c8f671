"""The polling benchmark's virtual clock on a real SQLite store (`bench.polling`): the store's
work on its thread takes no virtual time, so a lease dated by the loop's clock lapses only when
virtual time passes its end, never because the clock leapt while a read was under way."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from bench.polling import LoopClock, in_virtual_time
from bot.jobs.leases import Leases
from bot.runtime.metrics import Metrics
from storage.claims import ClaimRepository
from storage.jobs import Job, JobRepository
from storage.store import open_db
from tests.unit.test_jobs import new_job

LEASE = 30.0


def test_a_lease_holds_while_the_store_works_on_its_thread(tmp_path: Path) -> None:
    async def main() -> list[tuple[float, bool]]:
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop)
        # Pending throughout: a clock that jumped to the next timer while the store's thread
        # worked would land past the lease at the first read.
        past_the_lease = asyncio.ensure_future(asyncio.sleep(LEASE + 1))
        db = await open_db(f"sqlite:///{tmp_path / 'r.db'}")  # migrated on the thread
        try:
            repo = JobRepository(db, now=clock.now)
            claims = ClaimRepository(db)
            leases = Leases(claims, owner="here", seconds=LEASE, clock=clock, metrics=Metrics())
            await repo.insert(new_job())
            claimed = await claims.claim_next(
                "here", clock=clock.now, lease=timedelta(seconds=LEASE), max_in_flight=1
            )
            assert claimed is not None

            async def seen() -> tuple[float, bool]:
                job: Job | None = await repo.get(claimed.id)  # a read on the store's thread
                assert job is not None
                return loop.time(), leases.lapsed(job.lease_owner, job.lease_until, starting=False)

            during = [await seen() for _ in range(3)]
            await past_the_lease
            return [*during, await seen()]
        finally:
            await db.close()

    assert in_virtual_time(main()) == [(0.0, False)] * 3 + [(LEASE + 1, True)]
