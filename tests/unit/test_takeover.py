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

from bot.edits import TooManyJobs
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import RunflowSettings
from bot.runtime.clock import SYSTEM_CLOCK
from bot.runtime.config import CreditsSettings
from storage.jobs import Job, JobState
from tests.conftest import StaticFiles
from tests.fakes.runflow import FakeRunflow
from tests.images import png
from tests.unit.test_jobs import Harness, order, running

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


async def delivered_once(survivor: Harness, dead: Harness, runflow: FakeRunflow, job: Job) -> None:
    final = await asyncio.wait_for(survivor.service.wait_settled(job.id), 10)
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
