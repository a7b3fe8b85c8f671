"""Intake journal: how long 200 simultaneous `/edit`s wait for their journal entry, the step
before each acknowledgement.

Baseline, same run: the file journal (group commit, one fsync per batch) that SQLite installs
use. Measured: the PostgreSQL table journal (`TableJournal`, one autocommit INSERT per edit on
connections kept apart from the transactions'), first on an idle database, then while every
connection of the transactions' pool is held by a transaction waiting on a lock (a burst's job
writes queued on one member's lock), which is when an insert that asked that pool would wait
with them; the same insert through that pool is timed too, to show what keeping it apart buys.

Needs a PostgreSQL server: RETOUCH_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1:5432/
postgres); a database is made in it for the run and dropped after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg

from bench.core import Config, Report, Row, percentile, say, summary
from bot.edits import EditOptions, EditOrder, InputImage
from bot.jobs.journal import Journal
from bot.jobs.leases import Leases
from bot.jobs.table_journal import TableJournal
from bot.runtime.clock import SYSTEM_CLOCK
from bot.runtime.metrics import Metrics
from storage.claims import ClaimRepository
from storage.db import ts
from storage.intake_journal import IntakeJournalRepository
from storage.postgres import POOL_SIZE, PostgresDatabase
from storage.store import open_db

NAME = "journal"
SERVER_ENV = "RETOUCH_BENCH_POSTGRES"
HELD_FOR = 0.5  # seconds the transactions' pool stays held in the busy rounds

ORDER = EditOrder(
    guild_id=1,
    channel_id=2,
    user_id=3,
    prompt="make the sky a little warmer, keep everything else as it is",
    images=[InputImage(url="https://cdn.discordapp.com/attachments/1/2/photo.png", filename="photo.png")],
    options=EditOptions(quality="high"),
    application_id=4,
    role_ids=(5, 6),
)

Add = Callable[[EditOrder], Awaitable[None]]


async def _burst(add: Add, count: int, round_no: int) -> list[float]:
    async def one(n: int) -> float:
        started = time.perf_counter()
        await add(replace(ORDER, interaction_token=f"{round_no}-{n}-{secrets.token_hex(8)}"))
        return time.perf_counter() - started

    return list(await asyncio.gather(*(one(n) for n in range(count))))


@contextlib.asynccontextmanager
async def _database(server: str) -> AsyncIterator[str]:
    name = f"retouch_bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base, _, _ = server.rpartition("/")
            yield f"{base}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def _pool_held(db: PostgresDatabase) -> AsyncIterator[None]:
    """Every connection of the transactions' pool in a transaction waiting on one lock, itself
    held by one of them, for HELD_FOR seconds; more transactions queue for the pool."""
    holding = asyncio.Event()

    async def holder() -> None:
        async with db.transaction() as tx:
            await tx.lock("bench:member")
            holding.set()
            await asyncio.sleep(HELD_FOR)

    async def waiter() -> None:
        async with db.transaction() as tx:
            await tx.lock("bench:member")

    first = asyncio.create_task(holder())
    await holding.wait()
    others = [asyncio.create_task(waiter()) for _ in range(POOL_SIZE * 3)]
    await asyncio.sleep(0.05)  # the waiters reach the lock and the pool's queue
    try:
        yield
    finally:
        await asyncio.gather(first, *others)


def _through_the_pool(db: PostgresDatabase) -> Add:
    """The same row, inserted through the transactions' pool: what keeping it apart avoids."""

    async def insert(order: EditOrder) -> None:
        now = SYSTEM_CLOCK.now()
        async with db.transaction() as tx:
            await tx.execute(
                "INSERT INTO intake_journal (interaction_token, owner, lease_until, created_at, edit_order)"
                " VALUES (?, 'bench', ?, ?, '{}')",
                (order.interaction_token, ts(now + timedelta(seconds=30)), ts(now)),
            )

    return insert


async def run(cfg: Config) -> Report:
    count = 200
    rounds = cfg.pick(2, 5)
    report = Report(NAME)
    server = os.environ.get(SERVER_ENV, "postgresql://postgres@127.0.0.1:5432/postgres")
    results: dict[str, list[float]] = {"file": [], "table": [], "table, pool held": [], "pool, pool held": []}

    say(f"baseline: the file journal, {rounds} × {count} simultaneous adds")
    file_journal = Journal(cfg.workdir / f"bench-{secrets.token_hex(4)}.journal")
    for round_no in range(rounds):
        results["file"] += await _burst(file_journal.add, count, round_no)

    try:
        async with _database(server) as url:
            db = await open_db(url)
            assert isinstance(db, PostgresDatabase)
            try:
                rows = IntakeJournalRepository(db)
                leases = Leases(
                    ClaimRepository(db),
                    owner="bench:1",
                    seconds=30,
                    clock=SYSTEM_CLOCK,
                    metrics=Metrics(),
                    journal=rows,
                )
                table = TableJournal(rows, leases)
                pooled = _through_the_pool(db)
                for round_no in range(rounds):
                    say(f"round {round_no + 1}: the table journal, idle, then with the pool held")
                    results["table"] += await _burst(table.add, count, 100 + round_no)
                    async with _pool_held(db):
                        results["table, pool held"] += await _burst(table.add, count, 200 + round_no)
                    async with _pool_held(db):
                        results["pool, pool held"] += await _burst(pooled, count, 300 + round_no)
            finally:
                await db.close()
    except (OSError, asyncpg.PostgresError) as error:
        report.error = f"no PostgreSQL at {server} ({error}); set {SERVER_ENV}"
        return report

    base99 = percentile(results["file"], 99) * 1000
    base50 = percentile(results["file"], 50) * 1000

    def p(name: str, q: float) -> float:
        return percentile(results[name], q) * 1000

    label = f"{count} at once"
    report.rows = [
        Row(NAME, f"journal add p50, {label}, PostgreSQL table", p("table", 50), "ms", base50, label=""),
        Row(
            NAME,
            f"journal add p99, {label}, PostgreSQL table",
            p("table", 99),
            "ms",
            base99,
            goal="≤ 3× baseline",
            met=p("table", 99) <= 3 * base99,
        ),
        Row(
            NAME,
            "... while the transactions' pool is held",
            p("table, pool held", 99),
            "ms",
            base99,
            goal=f"≤ 3× baseline (pool held {HELD_FOR * 1000:.0f} ms)",
            met=p("table, pool held", 99) <= 3 * base99,
        ),
        Row(
            NAME,
            "... the same insert through that pool",
            p("pool, pool held", 99),
            "ms",
            base99,
            goal="(informational)",
        ),
    ]
    details: dict[str, Any] = {"simultaneous": count, "rounds": rounds, "pool_held_seconds": HELD_FOR}
    details.update({f"{name} ms": summary(values, 1000) for name, values in results.items()})
    report.details = details
    report.notes.append("baseline: the file journal (SQLite installs), same run")
    return report
