"""Several processes on one database: when one dies, another finishes its edits once.

Each "process" is a JobService with its own SQLite connection, lease name and clock on one
database file, editing at one fake host. A death is simulated by cancelling a process's tasks
(its workers and lease renewals) without handing anything back; the survivor's clock is moved
past the lease instead of sleeping through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.credits import Estimate
from bot.edits import EditOptions, TooManyJobs
from bot.jobs.recovery import TAKEOVER_LOOK
from bot.providers.base import ErrorKind
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import RunflowSettings
from bot.runtime.clock import SYSTEM_CLOCK
from bot.runtime.config import CreditsSettings
from bot.runtime.guilds import GuildSettingsService
from storage.claims import ClaimRepository
from storage.jobs import Job, JobRepository, JobState
from storage.sqlite import SqliteDatabase
from storage.store import open_db
from tests.conftest import StaticFiles
from tests.fakes.runflow import FakeRunflow
from tests.images import png
from tests.sql import jobs_plans
from tests.unit.test_jobs import Harness, new_job, order, running

LEASE = 3.0  # seconds; each process looks for lapsed leases every second


class Clock:
    """The real time, moved forward on demand."""

    def __init__(self) -> None:
        self.ahead = timedelta()

    def now(self) -> datetime:
        return SYSTEM_CLOCK.now() + self.ahead

    def monotonic(self) -> float:
        return SYSTEM_CLOCK.monotonic()


@pytest.fixture
def host(runflow: FakeRunflow) -> RunflowSettings:
    return RunflowSettings(api_key=SecretStr(runflow.api_key), base_url=runflow.base_url)


@pytest.fixture
async def a(tmp_path: Path, host: RunflowSettings) -> AsyncIterator[Harness]:
    async with running(tmp_path, host, RunflowProvider, lease_owner="a", lease_seconds=LEASE) as started:
        yield started


async def running_at_host(harness: Harness, runflow: FakeRunflow, static_files: StaticFiles) -> Job:
    """An edit that process `harness` claimed and submitted, its run held at the host."""
    runflow.hold = True
    job = await harness.submit(order(static_files.add("a.png", png())))
    await runflow.wait_for_run()
    async with asyncio.timeout(5):
        while (current := await harness.repo.get(job.id)) is None or current.state is not JobState.RUNNING:
            harness.delivery.shown.clear()
            await harness.delivery.shown.wait()
    assert current.lease_owner == "a"
    return current


async def delivered_once(
    survivor: Harness, dead: Harness, runflow: FakeRunflow, job: Job, *, within: float = 10
) -> None:
    final = await asyncio.wait_for(survivor.service.wait_settled(job.id), within)
    assert final.state is JobState.DONE
    assert len(runflow.runs) == 1  # the host saw one submit: the run was resumed, not sent again
    assert [done.id for done, _ in survivor.delivery.delivered] == [job.id]
    assert dead.delivery.delivered == []
    assert final.credits_charged == 14
    balance = await survivor.credits.balance(1, 3)
    assert (balance.available, balance.reserved) == (50 - 14, 0)  # charged once


async def test_a_dead_process_s_running_edit_is_resumed_by_another_after_its_lease(
    tmp_path: Path, host: RunflowSettings, a: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    job = await running_at_host(a, runflow, static_files)
    clock = Clock()
    async with running(
        tmp_path, host, RunflowProvider, lease_owner="b", lease_seconds=LEASE, clock=clock
    ) as b:
        await a.service._tasks.stop()  # a dies: no more renewals, nothing handed back
        await b.service._recovery.take_over()
        assert (await b.repo.get(job.id)) == job  # a's lease still runs: b leaves the job alone
        runflow.release()

        clock.ahead = timedelta(seconds=LEASE + 1)  # a's lease has lapsed

        await delivered_once(b, a, runflow, job)
        assert b.metrics.registry.get_sample_value("retouch_lease_takeovers_total") == 1


async def test_survivors_look_every_few_seconds_whatever_the_lease(
    tmp_path: Path, host: RunflowSettings, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    """A lease lapses up to a whole lease after its holder's last renewal; looking only every
    third of a lease on top of that, a survivor finished a dead process's edit up to 4/3 of the
    lease later (40 s at the default 30 s). It looks every TAKEOVER_LOOK seconds instead."""
    async with running(tmp_path, host, RunflowProvider, lease_owner="a", lease_seconds=24) as a:
        job = await running_at_host(a, runflow, static_files)
        clock = Clock()
        async with running(
            tmp_path, host, RunflowProvider, lease_owner="b", lease_seconds=24, clock=clock
        ) as b:
            await a.service._tasks.stop()  # a dies: no more renewals, nothing handed back
            runflow.release()
            clock.ahead = timedelta(seconds=24 + 1)  # a's lease has lapsed (the edit's 30 s deadline not)
            # Looking every 8 s (a third of the lease), b would not be done in 3 × TAKEOVER_LOOK.
            await delivered_once(b, a, runflow, job, within=3 * TAKEOVER_LOOK)


async def test_a_process_that_stops_hands_its_edits_to_another_at_once(
    tmp_path: Path, host: RunflowSettings, a: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    job = await running_at_host(a, runflow, static_files)
    async with running(tmp_path, host, RunflowProvider, lease_owner="b", lease_seconds=LEASE) as b:
        await a.service.stop()
        assert (await b.repo.get(job.id)) == replace(job, lease_owner=None, lease_until=None)
        runflow.release()
        await delivered_once(b, a, runflow, job)


async def test_a_member_s_limit_holds_across_processes(
    tmp_path: Path, host: RunflowSettings, runflow: FakeRunflow
) -> None:
    url = "http://127.0.0.1:9/a.png"  # never fetched: the jobs are created, not put in line
    limits = {"max_per_member": 2, "credit_settings": CreditsSettings(default_allowance=1000)}
    async with (
        running(tmp_path, host, RunflowProvider, lease_owner="a", **limits) as one,  # type: ignore[arg-type]
        running(tmp_path, host, RunflowProvider, lease_owner="b", **limits) as two,  # type: ignore[arg-type]
    ):
        estimate = one.service.estimate(order(url).options)
        outcomes = await asyncio.gather(
            *(p.service.create(replace(order(url), user_id=7), estimate) for p in (one, two) * 4),
            return_exceptions=True,
        )
        created = [outcome for outcome in outcomes if isinstance(outcome, Job)]
        assert len(created) == 2
        assert all(isinstance(outcome, TooManyJobs) for outcome in outcomes if outcome not in created)
        assert (await one.credits.balance(1, 7)).reserved == 2 * 14


async def failed_with(harness: Harness, *, hold: bool) -> Job:
    """An edit whose process died right after failing it: with its credits still held (or
    none reserved), its member not told, its lease lapsed."""
    now = SYSTEM_CLOCK.now()
    job = await harness.repo.insert(
        new_job(
            lease_owner="dead",  # held from the start, so no worker claims it meanwhile
            lease_until=now + timedelta(minutes=1),
        )
    )
    if hold:
        estimate = Estimate(credits=14, usd_micros=133_000, images=1)
        await harness.credits.reserve(guild_id=1, user_id=3, role_ids=[], job_id=job.id, estimate=estimate)
    failed = await harness.repo.move(
        job.id, [JobState.QUEUED], JobState.FAILED, error_kind=ErrorKind.UNAVAILABLE.value, error="503"
    )
    assert failed is not None
    lapsed = await ClaimRepository(harness.db).take_over(failed, "dead", now - timedelta(seconds=1))
    assert lapsed is not None
    return lapsed


async def test_two_recoveries_at_once_tell_each_member_once(
    tmp_path: Path, host: RunflowSettings, store_url: str
) -> None:
    """Several processes starting together each sweep the same leftovers; each notice is held
    until the other sweep is over or has told someone too, so both read the rows first."""
    async with (
        running(tmp_path, host, RunflowProvider, lease_owner="a", store_url=store_url) as a,
        running(tmp_path, host, RunflowProvider, lease_owner="b", store_url=store_url) as b,
    ):
        held = await failed_with(a, hold=True)
        free = await failed_with(a, hold=False)
        told: list[int] = []
        over = 0
        changed = asyncio.Condition()

        async def report_failure(job: Job, message: str) -> None:
            async with changed:
                told.append(job.id)
                changed.notify_all()
                await changed.wait_for(lambda: over > 0 or len(told) > 1)

        async def recovering(process: Harness) -> None:
            nonlocal over
            process.delivery.report_failure = report_failure  # type: ignore[method-assign]
            await process.service.recover()
            async with changed:
                over += 1
                changed.notify_all()

        async with asyncio.timeout(10):
            await asyncio.gather(recovering(a), recovering(b))

        assert sorted(told) == [held.id, free.id]
        assert (await a.credits.balance(1, 3)).reserved == 0
        for job in (held, free):
            final = await a.repo.get(job.id)
            assert final is not None and final.notified_at is not None and final.lease_owner is None


async def test_a_survivor_settles_and_tells_what_a_dead_process_was_ending(
    tmp_path: Path, host: RunflowSettings, a: Harness
) -> None:
    """Before, only a process's own start did this: a dead process's member waited for it."""
    clock = Clock()
    async with running(
        tmp_path, host, RunflowProvider, lease_owner="b", lease_seconds=LEASE, clock=clock
    ) as b:
        job = await a.service.create(order("http://127.0.0.1:9/a.png"), a.service.estimate(EditOptions()))
        assert job.lease_owner == "a"  # held by a from its creation, as a job is while a works on it
        await a.repo.move(job.id, [JobState.QUEUED], JobState.FAILED, error_kind="unavailable", error="503")
        await a.service._tasks.stop()  # a dies: its lease on the failed job is never handed back
        told = asyncio.Event()

        async def report_failure(job: Job, message: str) -> None:
            told.set()

        b.delivery.report_failure = report_failure  # type: ignore[method-assign]

        await b.service._recovery.sweep()
        assert not told.is_set()  # a's lease still runs: it may still be ending the job
        assert (await b.credits.balance(1, 3)).reserved == 14

        clock.ahead = timedelta(seconds=LEASE + 1)  # a's lease has lapsed
        await asyncio.wait_for(told.wait(), 10)  # b's own periodic sweep

        final = await b.repo.get(job.id)
        assert final is not None and final.notified_at is not None
        assert (await b.credits.balance(1, 3)).reserved == 0


async def test_a_cancel_whose_process_died_before_the_refund_is_refunded_by_another(
    tmp_path: Path, host: RunflowSettings, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    """The cancel came through b while a worked on the edit, and b died before releasing the
    credits: the job must stay leased (b's lease) for a survivor's sweep to find it."""
    clock = Clock()
    async with running(
        tmp_path, host, RunflowProvider, lease_owner="a", lease_seconds=LEASE, clock=clock
    ) as a:
        job = await running_at_host(a, runflow, static_files)
        async with running(tmp_path, host, RunflowProvider, lease_owner="b", lease_seconds=LEASE) as b:

            async def crash(job_id: int, *, reason: str) -> None:
                raise RuntimeError("b died here")

            b.credits.release = crash  # type: ignore[method-assign]
            with pytest.raises(RuntimeError):
                await b.service.cancel(job.id)
            await b.service._tasks.stop()
            settled = await asyncio.wait_for(a.service.wait_settled(job.id), 10)  # a's worker stops
            assert settled.state is JobState.CANCELLED
            assert (await a.credits.balance(1, 3)).reserved == 14

            released = asyncio.Event()
            release = a.credits.release

            async def releasing(job_id: int, *, reason: str) -> None:
                await release(job_id, reason=reason)
                released.set()

            a.credits.release = releasing  # type: ignore[method-assign]
            clock.ahead = timedelta(seconds=LEASE + 1)  # b's lease has lapsed
            await asyncio.wait_for(released.wait(), 10)  # a's periodic sweep
            assert (await a.credits.balance(1, 3)).reserved == 0


async def test_a_cancel_in_one_process_stops_the_progress_of_the_process_running_the_edit(
    tmp_path: Path, host: RunflowSettings, runflow: FakeRunflow, static_files: StaticFiles, pg_url: str
) -> None:
    """The worker in the other process learnt of the cancel only at its next poll, up to the
    longest poll interval later: until then the progress it had queued could show the edit
    running again, Cancel button and all, over the member's "cancelled"."""
    async with running(
        tmp_path / "a", host, RunflowProvider, lease_owner="a", store_url=pg_url, poll_interval=30
    ) as a:
        job = await running_at_host(a, runflow, static_files)
        async with running(tmp_path / "b", host, RunflowProvider, lease_owner="b", store_url=pg_url) as b:
            assert await b.service.cancel(job.id) is not None
            await asyncio.wait_for(a.delivery.told_cancelled.wait(), 5)
        assert a.delivery.cancels == [job.id]


async def test_the_periodic_sweep_reads_no_finished_jobs_but_the_leased(tmp_path: Path) -> None:
    """It runs every few seconds in every process: it looks at the jobs under a lease, not
    at every finished job of a state through the index on state (nor at the whole table)."""
    db = await open_db(tmp_path / "r.db")
    try:
        assert isinstance(db, SqliteDatabase)
        repo = JobRepository(db)
        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        await repo.final_with_open_hold(leased_only=True)
        await repo.failed_unnotified(leased_only=True)
        read = jobs_plans(tmp_path / "r.db", statements)
        assert len(read) == 2
        for sql, details in read:
            every = [d for d in details if d.startswith("SCAN") or d.endswith("jobs_state (state=?)")]
            assert every == [], (sql, details)
    finally:
        await db.close()


async def test_waiting_for_an_edit_that_another_process_ends(
    tmp_path: Path, host: RunflowSettings, a: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    """`wait_settled` (the command-line edit, a button pressed while a result is recorded) heard
    only of ends in its own process: waiting on an edit another process finished never returned."""
    await a.service._tasks.stop()  # a's workers take nothing: b runs the edit
    async with running(tmp_path, host, RunflowProvider, lease_owner="b", lease_seconds=LEASE) as b:
        job = await b.submit(order(static_files.add("a.png", png())))
        final = await asyncio.wait_for(a.service.wait_settled(job.id), 5)
        assert final.state is JobState.DONE


async def test_the_owners_pause_everywhere_reaches_every_process_and_outlives_a_restart(
    tmp_path: Path, host: RunflowSettings, store_url: str
) -> None:
    """`/pause everywhere` flipped a flag in the one process that handled it: the other shards
    kept taking edits, and a restart took them again."""
    shared = store_url.startswith("postgresql")
    async with (
        running(tmp_path, host, RunflowProvider, lease_owner="a", store_url=store_url) as one,
        running(tmp_path, host, RunflowProvider, lease_owner="b", store_url=store_url) as two,
    ):
        await one.service.pause_everywhere(True, actor_id=9)
        assert one.service.paused
        if shared:  # several processes share PostgreSQL; on SQLite the bot is one process
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not two.service.paused:  # until the other process has heard and read it
                assert loop.time() < deadline, "the other process never heard of the pause"
                await asyncio.sleep(0.01)
    async with running(tmp_path, host, RunflowProvider, lease_owner="c", store_url=store_url) as again:
        assert again.service.paused
        await again.service.pause_everywhere(False, actor_id=9)
    async with running(tmp_path, host, RunflowProvider, lease_owner="d", store_url=store_url) as resumed:
        assert not resumed.service.paused


async def test_a_servers_settings_changed_in_one_process_are_read_again_in_the_others(
    tmp_path: Path, host: RunflowSettings, pg_url: str
) -> None:
    """Each process keeps the settings it read: a server paused through one process stayed open
    in another (the painter's page or a takeover can serve a server from any process)."""
    async with (
        running(tmp_path, host, RunflowProvider, lease_owner="a", store_url=pg_url) as one,
        running(tmp_path, host, RunflowProvider, lease_owner="b", store_url=pg_url) as two,
    ):
        servers = []
        for process in (one, two):  # wired as the Discord side wires them
            settings = GuildSettingsService(process.db, announce=process.service.settings_changed)
            process.service.on_settings_changed(settings.forget)
            servers.append(settings)
        assert not (await servers[1].get(1)).paused  # read, and kept
        await servers[0].set_paused(1, True, actor_id=9)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not (await servers[1].get(1)).paused:
            assert loop.time() < deadline, "the other process kept the settings it had read"
            await asyncio.sleep(0.01)
