"""The fair line in the jobs table: members take turns, whatever order their jobs arrived in,
and two processes sharing the database (each with its own connection) serve one line."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.jobs import queue
from bot.jobs.leases import Leases
from bot.jobs.queue import Line
from bot.runtime.clock import SYSTEM_CLOCK
from bot.runtime.metrics import Metrics
from storage.claims import ClaimRepository, Owed
from storage.db import Database
from storage.job_model import EditOptions
from storage.jobs import Job, JobRepository, JobState, NewJob
from storage.sqlite import SqliteDatabase
from storage.store import open_db
from tests.sql import jobs_plans


class Process:
    """One process's view of the shared line: its own connection, lease name and clock."""

    def __init__(self, db: Database, owner: str, *, max_in_flight: int = 100, ahead: float = 0.0) -> None:
        self.db = db
        self.repo = JobRepository(db)
        self.ahead = ahead
        self.metrics = Metrics()
        self.claims = claims = ClaimRepository(db)
        self.leases = Leases(claims, owner=owner, seconds=30, clock=self, metrics=self.metrics)
        self.line = Line(claims, self.leases, self.metrics, max_in_flight=max_in_flight)

    def now(self) -> datetime:
        """This process's clock, `ahead` of the real time."""
        return SYSTEM_CLOCK.now() + timedelta(seconds=self.ahead)

    def monotonic(self) -> float:
        return SYSTEM_CLOCK.monotonic()

    async def put(self, user_id: int) -> int:
        job = await self.repo.insert(
            NewJob(guild_id=1, channel_id=2, user_id=user_id, prompt="p", options=EditOptions(), inputs=[])
        )
        return job.id

    async def taken(self, count: int) -> list[int]:
        return [(await self.line.take()).id for _ in range(count)]


@pytest.fixture
async def databases(tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    first = await open_db(tmp_path / "shared.db")
    second = await open_db(tmp_path / "shared.db")
    yield first, second
    await second.close()
    await first.close()


@pytest.fixture
async def one(databases: tuple[Database, Database]) -> Process:
    return Process(databases[0], "one")


async def test_round_robin_across_members(one: Process) -> None:
    for _ in range(4):
        await one.put(100)
    await one.put(200)
    await one.put(300)
    assert await one.line.order() == [1, 5, 6, 2, 3, 4]
    assert await one.line.order(first=4) == [1, 5, 6, 2]
    served = await one.taken(6)
    assert served == [1, 5, 6, 2, 3, 4]


async def test_a_cancelled_job_leaves_the_line(one: Process) -> None:
    first, second = await one.put(1), await one.put(1)
    third = await one.put(2)
    assert await one.line.order() == [first, third, second]
    # A job leaves the line when it leaves `queued` (a cancel), once.
    assert await one.repo.move(first, [JobState.QUEUED], JobState.CANCELLED) is not None
    assert await one.repo.move(first, [JobState.QUEUED], JobState.CANCELLED) is None
    assert await one.line.order() == [second, third]


async def test_order_matches_service_after_rotation(one: Process) -> None:
    for user in (1, 1, 2, 3, 2):
        await one.put(user)
    first = await one.line.take()
    assert first.id == 1
    predicted = await one.line.order()
    assert await one.taken(4) == predicted


async def test_a_member_served_long_ago_joins_the_back_of_the_ring(one: Process) -> None:
    early = await one.put(1)
    assert await one.taken(1) == [early]
    waiting = await one.put(2)
    returning = await one.put(1)
    assert await one.line.order() == [waiting, returning]


async def test_two_processes_serve_one_line_each_job_once_in_turn(
    databases: tuple[Database, Database],
) -> None:
    a, b = Process(databases[0], "a"), Process(databases[1], "b")
    for user in (1, 1, 1, 1, 2, 2, 3, 4, 4, 4):
        await (a if user % 2 else b).put(user)
    predicted = await b.line.order()

    served = await asyncio.gather(*(p.line.take() for p in (a, b) * 5))

    assert sorted(job.id for job in served) == sorted(predicted)  # every job, none twice
    by_claim = sorted(served, key=lambda job: (job.lease_until, job.id))
    assert [job.id for job in by_claim] == predicted
    assert {job.lease_owner for job in served} == {"a", "b"}
    assert await a.line.claim() is None


async def test_the_cap_on_edits_at_hosts_holds_across_processes(databases: tuple[Database, Database]) -> None:
    a = Process(databases[0], "a", max_in_flight=2)
    b = Process(databases[1], "b", max_in_flight=2)
    for user in range(1, 6):
        await a.put(user)

    claimed = [job for job in await asyncio.gather(*(p.line.claim() for p in (a, b, a, b))) if job]

    assert len(claimed) == 2
    # One ends and hands back its claim: there is room for exactly one more, in either process.
    done = claimed[0]
    await a.repo.move(done.id, [JobState.QUEUED], JobState.DONE)
    assert await b.line.claim() is not None
    assert await a.line.claim() is None


async def test_a_claim_whose_process_died_lapses_and_another_takes_the_job(
    databases: tuple[Database, Database],
) -> None:
    a = Process(databases[0], "a")
    job = await a.put(1)
    assert (await a.line.take()).id == job  # then a dies before moving it on
    b = Process(databases[1], "b")
    assert await b.line.claim() is None  # a's lease still runs
    b.ahead = a.leases.seconds + 1
    taken = await b.line.claim()
    assert taken is not None and (taken.id, taken.lease_owner) == (job, "b")


async def test_a_finished_job_being_ended_keeps_its_lease_while_its_process_lives(
    databases: tuple[Database, Database],
) -> None:
    """A sweep that claims a failed job to tell its member holds it while it tells them; the
    renewals skipped finished jobs, so a notice slower than a lease could be sent twice."""
    a, b = Process(databases[0], "a"), Process(databases[1], "b")
    job = await a.put(1)
    failed = await a.repo.move(job, [JobState.QUEUED], JobState.FAILED)
    assert failed is not None
    assert await a.leases.claim(failed, starting=False, owed=Owed.NOTICE) is not None
    a.ahead = b.ahead = a.leases.seconds - 1  # the claim is about to lapse; a renews it
    assert await a.claims.renew(a.leases.owner, a.leases.until()) == 1
    b.ahead += 2  # past the first lease, within the renewed one
    still = await a.repo.get(job)
    assert still is not None
    assert await b.leases.claim(still, starting=False, owed=Owed.NOTICE) is None


async def test_a_member_s_jobs_are_served_in_the_order_acknowledged_not_written(db: Database) -> None:
    """Rows written in the other order than their edits were acknowledged (concurrent inserts
    on PostgreSQL) are served, shown in line and counted in the member's turn by acknowledgement."""
    process = Process(db, "one")
    acked = process.now()

    async def put(user_id: int, acked_after: float) -> int:
        new = NewJob(guild_id=1, channel_id=2, user_id=user_id, prompt="p", options=EditOptions(), inputs=[])
        job = await process.repo.insert(replace(new, created_at=acked + timedelta(seconds=acked_after)))
        return job.id

    second = await put(1, 2)
    other = await put(2, 1)
    first = await put(1, 0)
    assert await process.line.order() == [first, other, second]
    assert await process.taken(3) == [first, other, second]


# A member's edit arriving some seconds after the first (ties included), or a claim of the job
# whose turn it is: members are served and come back to the line in any order.
_STEPS = st.lists(
    st.one_of(st.tuples(st.integers(1, 4), st.integers(0, 5)), st.none()), min_size=1, max_size=25
)


@settings(max_examples=40, deadline=None)
@given(_STEPS)
def test_the_line_shown_is_the_order_claims_take(steps: list[tuple[int, int] | None]) -> None:
    """Places are worked out from the waiting rows in Python and a claim picks in SQL: whatever
    the members, the arrival times and who was served before, the line shown is the order the
    claims then take."""
    asyncio.run(_shown_then_taken(steps))


async def _shown_then_taken(steps: list[tuple[int, int] | None]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = await open_db(Path(folder) / "line.db")
        try:
            process = Process(db, "one")
            start = process.now() - timedelta(seconds=10)
            for step in steps:
                if step is None:
                    await process.line.claim()
                    continue
                user_id, after = step
                new = NewJob(
                    guild_id=1, channel_id=2, user_id=user_id, prompt="p", options=EditOptions(), inputs=[]
                )
                await process.repo.insert(replace(new, created_at=start + timedelta(seconds=after)))
            shown = await process.line.order()
            assert await process.line.order(first=2) == shown[:2]
            taken = []
            while (job := await process.line.claim()) is not None:
                taken.append(job.id)
            assert taken == shown
            assert await process.line.order() == []
        finally:
            await db.close()


async def test_a_new_job_wakes_one_idle_worker_not_all_of_them(one: Process) -> None:
    """Idle workers each waking into a claim for every new job were most of the database's
    transactions under a burst; a wake-up starts one claim, and a successful claim the next."""
    claims = 0
    claim_next = one.claims.claim_next
    progress = asyncio.Event()

    async def counted(*args: Any, **kwargs: Any) -> Job | None:
        nonlocal claims
        claims += 1
        try:
            return await claim_next(*args, **kwargs)
        finally:
            progress.set()

    one.claims.claim_next = counted  # type: ignore[method-assign]
    taken: list[int] = []

    async def worker() -> None:
        taken.append((await one.line.take()).id)  # one job each: a worker busy with it claims no more
        progress.set()

    workers = [asyncio.create_task(worker()) for _ in range(50)]
    try:
        async with asyncio.timeout(5):
            while claims < 50:  # every worker looked once and is idle
                progress.clear()
                await progress.wait()
        claims = 0
        burst = [await one.put(user) for user in range(1, 11)]
        one.line.wake()
        async with asyncio.timeout(5):
            while len(taken) < len(burst):
                progress.clear()
                await progress.wait()
        assert sorted(taken) == burst
        assert claims <= len(burst) + 1  # before, all 50 idle workers claimed at once
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def test_a_processs_idle_workers_look_for_unannounced_work_as_one(
    databases: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each idle worker looked on its own every `LOOK_INTERVAL`: 200 of them made 100 empty claims
    a second per process, each waiting on the cluster's claim lock with a pooled connection."""
    look = 0.05
    monkeypatch.setattr(queue, "LOOK_INTERVAL", look)
    one, other = Process(databases[0], "one"), Process(databases[1], "other")
    claims = at_once = most_at_once = 0
    claim_next = one.claims.claim_next

    async def counted(*args: Any, **kwargs: Any) -> Job | None:
        nonlocal claims, at_once, most_at_once
        claims, at_once = claims + 1, at_once + 1
        most_at_once = max(most_at_once, at_once)
        try:
            return await claim_next(*args, **kwargs)
        finally:
            at_once -= 1

    one.claims.claim_next = counted  # type: ignore[method-assign]
    workers = [asyncio.create_task(one.line.take()) for _ in range(50)]
    try:
        await asyncio.sleep(20 * look)  # a window to count the looks in, not a wait for an event
        assert 3 <= claims <= 50 + 25  # each worker's first look, then about one look per interval
        assert most_at_once == 1
        # A job put in line by another process, with no wake-up: the next look finds it.
        job = await other.put(1)
        async with asyncio.timeout(5):
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
        assert [task.result().id for task in done] == [job]
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def test_the_lines_statements_read_no_finished_jobs(one: Process, tmp_path: Path) -> None:
    """Claims, the line's order and the open counts run on every edit: each reads through an
    index, never the whole jobs table with its history (every SCAN of the table was one)."""
    for user in (1, 1, 2):
        await one.put(user)
    assert isinstance(one.db, SqliteDatabase)
    statements: list[str] = []
    one.db.conn.set_trace_callback(statements.append)
    await one.line.claim()
    await one.line.order(first=5)
    await one.repo.count_open(1, 1)

    read = jobs_plans(tmp_path / "shared.db", statements)
    assert len(read) == 4  # the claim's look at the line, the claim, the order, the count
    for sql, details in read:
        assert [detail for detail in details if _scans_jobs(detail)] == [], (sql, details)


# What the claim's statement derives from the waiting rows (each member's turn):
# scanning those is by design; scanning the jobs table, under any of its names, never is.
_DERIVED = ("turns", "(subquery")


def _scans_jobs(detail: str) -> bool:
    return detail.startswith("SCAN ") and not detail.removeprefix("SCAN ").startswith(_DERIVED)


async def test_a_look_at_an_empty_line_takes_no_write_lock(one: Process) -> None:
    """A third of the claims in the throughput benchmark found the line empty, each one a write
    transaction (and on PostgreSQL a turn on the cluster's claim lock) for nothing."""
    await one.put(1)
    assert isinstance(one.db, SqliteDatabase)
    statements: list[str] = []
    one.db.conn.set_trace_callback(statements.append)
    assert await one.line.claim() is not None
    assert any(sql.startswith("BEGIN") for sql in statements)
    statements.clear()
    assert await one.line.claim() is None
    assert statements and not [sql for sql in statements if sql.startswith(("BEGIN", "UPDATE", "COMMIT"))]
