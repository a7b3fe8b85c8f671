"""The intake journal in PostgreSQL: what another process may take over, when, and only once.

Each "process" is a `TableJournal` (or a whole JobService) with its own lease name and clock on
one real PostgreSQL database; a process's death is its lease left unrenewed while the others'
clocks move past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.edits import TOKEN_LIFETIME, EditOrder
from bot.jobs.journal import HandedOn
from bot.jobs.leases import Leases
from bot.jobs.table_journal import TableJournal
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import RunflowSettings
from bot.runtime.metrics import Metrics
from storage.claims import ClaimRepository
from storage.db import Database
from storage.intake_journal import IntakeJournalRepository
from storage.postgres import PostgresDatabase
from storage.store import open_db
from tests.fakes.runflow import FakeRunflow
from tests.unit.test_jobs import Harness, running
from tests.unit.test_journal import order
from tests.unit.test_takeover import Clock

LEASE = 3.0


class Process:
    """One process's journal: its lease name, its clock."""

    def __init__(self, db: PostgresDatabase, owner: str) -> None:
        self.clock = Clock()
        self.leases = Leases(
            ClaimRepository(db),
            owner=owner,
            seconds=LEASE,
            clock=self.clock,
            metrics=Metrics(),
            journal=IntakeJournalRepository(db),
        )
        self.journal = TableJournal(IntakeJournalRepository(db), self.leases)

    async def recovers(self, *, starting: bool = False) -> list[str | None]:
        return [o.interaction_token for o in await self.journal.recent(starting=starting)]


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[PostgresDatabase]:
    database = await open_db(pg_url)
    assert isinstance(database, PostgresDatabase)
    yield database
    await database.close()


async def tokens_in_table(db: Database) -> list[tuple[str, str]]:
    rows = await db.fetch_all(
        "SELECT interaction_token, owner FROM intake_journal ORDER BY interaction_token"
    )
    return [(row["interaction_token"], row["owner"]) for row in rows]


async def test_another_process_takes_only_what_a_gone_process_kept(db: PostgresDatabase) -> None:
    a, b = Process(db, "machine-a:1"), Process(db, "machine-b:1")
    await a.journal.add(order("kept"))
    await a.journal.add(order("refused"))
    await a.journal.withdraw(order("refused"))
    assert await b.recovers() == []  # a's lease runs: it may be writing the job right now
    b.clock.ahead = timedelta(seconds=LEASE + 1)
    assert await b.recovers() == ["kept"]
    assert await b.recovers() == []  # b holds it now, and is writing it
    assert await tokens_in_table(db) == [("kept", "machine-b:1")]
    recovered = await Process(db, "machine-c:1").journal.recent(starting=False)
    assert recovered == []  # b's lease on it runs


async def test_the_order_comes_back_whole(db: PostgresDatabase) -> None:
    a, b = Process(db, "machine-a:1"), Process(db, "machine-b:1")
    await a.journal.add(order("whole"))
    b.clock.ahead = timedelta(seconds=LEASE + 1)
    assert await b.journal.recent(starting=False) == [order("whole")]


async def test_a_renewing_process_keeps_its_edits(db: PostgresDatabase) -> None:
    a, b = Process(db, "machine-a:1"), Process(db, "machine-b:1")
    await a.journal.add(order("slow"))
    a.clock.ahead = timedelta(seconds=LEASE - 1)
    await a.leases.renew()  # its lease now ends 2 × LEASE - 1 after the add
    b.clock.ahead = timedelta(seconds=LEASE + 1)
    assert await b.recovers() == []
    b.clock.ahead = timedelta(seconds=2 * LEASE)
    assert await b.recovers() == ["slow"]


async def test_at_start_a_process_takes_back_its_own_at_once(db: PostgresDatabase) -> None:
    before = Process(db, "container:1")
    await before.journal.add(order("mine"))
    after = Process(db, "container:1")  # the same name after a restart, its lease still running
    assert await after.recovers(starting=False) == []
    assert await after.recovers(starting=True) == ["mine"]


async def test_edits_older_than_a_token_are_dropped(db: PostgresDatabase) -> None:
    a, b = Process(db, "machine-a:1"), Process(db, "machine-b:1")
    await a.journal.add(order("old"))
    b.clock.ahead = TOKEN_LIFETIME
    assert await b.recovers() == []  # nobody could answer it any more
    await b.journal.forget_older()
    assert await tokens_in_table(db) == []


# ---------------------------------------------------------------------------------------------- writing the job


@pytest.fixture
def host(runflow: FakeRunflow) -> RunflowSettings:
    return RunflowSettings(api_key=SecretStr(runflow.api_key), base_url=runflow.base_url)


def edit(token: str) -> EditOrder:
    # Never fetched: the jobs are written, their runs are not what these tests look at.
    return replace(order(token), options=replace(order(token).options, quality="high", count=1))


async def jobs_for(harness: Harness, token: str) -> int:
    row = await harness.db.fetch_one("SELECT COUNT(*) AS n FROM jobs WHERE interaction_token = ?", (token,))
    assert row is not None
    return int(row["n"])


async def test_two_processes_recovering_at_once_write_one_job(
    tmp_path: Path, pg_url: str, host: RunflowSettings
) -> None:
    b_clock, c_clock = Clock(), Clock()
    async with (
        running(tmp_path, host, RunflowProvider, lease_owner="machine-a:1", store_url=pg_url) as a,
        running(
            tmp_path, host, RunflowProvider, lease_owner="machine-b:1", store_url=pg_url, clock=b_clock
        ) as b,
        running(
            tmp_path, host, RunflowProvider, lease_owner="machine-c:1", store_url=pg_url, clock=c_clock
        ) as c,
    ):
        await a.service._tasks.stop()  # a dies: no more renewals
        for n in range(10):
            await a.service.note(replace(edit(f"orphan-{n}"), user_id=100 + n))
        b_clock.ahead = c_clock.ahead = timedelta(seconds=30 + 1)
        await asyncio.gather(b.service._recovery.take_over(), c.service._recovery.take_over())
        for n in range(10):
            assert await jobs_for(b, f"orphan-{n}") == 1
        assert await tokens_in_table(a.db) == []


@pytest.mark.parametrize("first", ["holder", "taker", "together"])
async def test_a_slow_holder_and_the_process_that_took_over_write_one_job(
    tmp_path: Path, pg_url: str, host: RunflowSettings, first: str
) -> None:
    """The holder's lease lapsed while it was still alive, writing the job under a busy database,
    and another process took the edit over: whichever writes second finds it written."""
    b_clock = Clock()
    async with (
        running(tmp_path, host, RunflowProvider, lease_owner="machine-a:1", store_url=pg_url) as a,
        running(
            tmp_path, host, RunflowProvider, lease_owner="machine-b:1", store_url=pg_url, clock=b_clock
        ) as b,
    ):
        slow = await a.service.note(edit("slow"))
        b_clock.ahead = timedelta(seconds=30 + 1)
        estimate = a.service.estimate(slow.options)
        if first == "holder":
            b_journal = b.service._core.journal
            assert b_journal is not None
            assert await b_journal.recent(starting=False) == [slow]  # b holds it now...
            await a.service.create(slow, estimate)  # ...and a, still alive, writes it
            with pytest.raises(HandedOn):
                await b.service._intake.record(slow, estimate)
        elif first == "taker":
            await b.service._recovery.take_over()
            with pytest.raises(HandedOn):
                await a.service.create(slow, estimate)
        else:
            await asyncio.gather(
                a.service.create(slow, estimate), b.service._recovery.take_over(), return_exceptions=True
            )
        assert await jobs_for(a, "slow") == 1
        assert await tokens_in_table(a.db) == []
        assert (await a.credits.balance(1, 3)).reserved == 14  # reserved once
