"""A host's `max_concurrency` holds across every process on the database, not in each one:
the count of edits at a host is kept in the jobs table (`storage.host_slots`)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from bot.providers.base import Provider
from bot.providers.router import build_router
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import FalSettings, ProvidersSettings, RunflowSettings
from bot.runtime.clock import SYSTEM_CLOCK
from storage.claims import ClaimRepository
from storage.db import Database
from storage.host_slots import HostSlotRepository
from storage.jobs import Job, JobRepository, JobState
from storage.sqlite import SqliteDatabase
from storage.store import open_db
from tests.conftest import StaticFiles
from tests.fakes.fal import FakeFal
from tests.fakes.runflow import FakeRunflow
from tests.images import png
from tests.sql import jobs_plans
from tests.unit.test_jobs import Harness, new_job, order, running


async def settled(job_id: int, *processes: Harness) -> Job:
    """The job once it is final, whichever process finished it."""
    waits = [asyncio.create_task(process.service.wait_settled(job_id)) for process in processes]
    done, pending = await asyncio.wait(waits, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    for wait in pending:
        wait.cancel()
    assert done, f"job {job_id} did not finish"
    return done.pop().result()


async def test_a_host_s_limit_holds_across_processes(
    tmp_path: Path, store_url: str, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    """Two processes with a worker for every slot of both hosts: before, each process counted
    only its own submits in flight, and the first host ran every edit at once."""
    async with FakeFal() as fal:
        hosts = ProvidersSettings(
            order=["runflow", "fal"],
            runflow=RunflowSettings(
                api_key=SecretStr(runflow.api_key), base_url=runflow.base_url, max_concurrency=2
            ),
            fal=FalSettings(api_key=SecretStr(fal.api_key), base_url=fal.base_url, max_concurrency=8),
        )

        def route(session: aiohttp.ClientSession, db: Database) -> Provider:
            return build_router(hosts, session, HostSlotRepository(db, now=SYSTEM_CLOCK.now))

        runflow.delay = 0.5  # slow runs: each holds its slot a while
        url = static_files.add("a.png", png())
        both = {"store_url": store_url, "concurrency": 10, "route": route}
        async with (
            running(tmp_path, hosts.runflow, RunflowProvider, lease_owner="a", **both) as a,  # type: ignore[arg-type]
            running(tmp_path, hosts.runflow, RunflowProvider, lease_owner="b", **both) as b,  # type: ignore[arg-type]
        ):
            jobs = await asyncio.gather(
                *((a, b)[member % 2].submit(replace(order(url), user_id=member)) for member in range(10))
            )
            finals = [await settled(job.id, a, b) for job in jobs]

    assert [final.state for final in finals] == [JobState.DONE] * 10
    assert runflow.most_at_once <= 2
    assert sorted(final.provider or "" for final in finals) == ["fal"] * (10 - len(runflow.runs)) + [
        "runflow"
    ] * len(runflow.runs)


async def test_slots_count_submits_under_a_live_lease_and_runs_until_they_end(db: Database) -> None:
    repo, claims = JobRepository(db), ClaimRepository(db)
    now = SYSTEM_CLOCK.now()
    slots = HostSlotRepository(db, now=lambda: now)

    async def submitting() -> int:
        job = await repo.insert(
            new_job(
                lease_owner="a",
                lease_until=now + timedelta(seconds=30),
            )
        )
        await repo.move(job.id, [JobState.QUEUED], JobState.SUBMITTING)
        return job.id

    async def dies(job_id: int) -> None:
        """The process holding the job stops renewing its lease, which lapses."""
        job = await repo.get(job_id)
        assert job is not None and await claims.take_over(job, "dead", now - timedelta(seconds=1))

    first, second, third = [await submitting() for _ in range(3)]
    assert await slots.take("runflow", first, 2) and await slots.take("runflow", second, 2)
    assert not await slots.take("runflow", third, 2)
    assert await slots.take("fal", third, 1)  # another host's slots are its own

    await repo.move(first, [JobState.SUBMITTING], JobState.RUNNING, provider="runflow", run_id="r1")
    await slots.give_back("runflow", second)  # its submit failed there
    assert await slots.take("runflow", third, 2)  # from fal, whose slot it gives back
    assert await slots.take("fal", await submitting(), 1)

    # A running job holds its slot whatever its lease: its run is still at the host.
    await dies(first)
    waiting = await submitting()
    assert not await slots.take("runflow", waiting, 2)
    # A submitting one whose process died holds none once its lease lapsed.
    await dies(third)
    assert await slots.take("runflow", waiting, 2)
    # A run that ended gives its slot back.
    await repo.move(first, [JobState.RUNNING], JobState.DELIVERING)
    assert await slots.take("runflow", await submitting(), 2)
    late = await submitting()
    assert not await slots.take("runflow", late, 2)
    # A job cancelled while it waited for a slot waits no more.
    await repo.move(late, [JobState.SUBMITTING], JobState.CANCELLED)
    assert await slots.take("runflow", late, 2)


async def test_taking_a_slot_reads_no_finished_jobs(tmp_path: Path) -> None:
    """Every submit takes a slot: it reads the jobs at hosts through an index, never the whole
    jobs table with its history."""
    db = await open_db(tmp_path / "r.db")
    try:
        assert isinstance(db, SqliteDatabase)
        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        await HostSlotRepository(db, now=SYSTEM_CLOCK.now).take("runflow", 1, 2)
        ((_, details),) = jobs_plans(tmp_path / "r.db", statements)
        assert [detail for detail in details if detail.startswith("SCAN")] == [], details
    finally:
        await db.close()
