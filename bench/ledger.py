"""Ledger: reservations plus captures per second through `CreditService`, on SQLite and on PostgreSQL.

For each job: `reserve` (its own transaction: kept balance, caps, reserve entry, hold row,
balance update, job mirror) and then `settle` with one delivered image (capture entry, settlement mirror), one
after the other, as the job runner does. Job rows are made beforehand, untimed. Jobs are
spread over 100 members of one server, so each member's history grows as it would in use.

Baseline, same run, on each store: one INSERT into the same `ledger` table and one COMMIT per
row, raw — aiosqlite with the product's connection pragmas (WAL, synchronous=NORMAL); asyncpg on
one connection to the same PostgreSQL server, in a database of its own. The same rows written
through the store's own transactions (`Database.transaction`) are shown against it too: the
floor a job's two transactions stand on. A job is two
transactions (reserve, then settle), so two commits: on PostgreSQL, where a commit waits for
the server's WAL flush, that alone makes the floor half the baseline's rate. The PostgreSQL
server is `tests/postgres.py`'s; without one its rows are left out and a note says why.

A reservation reads the member's kept balance, not their history, so the rate must not depend on
how long that history is: a second set of figures follows one member through 10,000 jobs and
times the 500 up to their 1,000th and 10,000th (and their first 500, for the details) against a
new member's first 500, made in turns with them, block of 100 for block of 100, each side the
median of its five blocks. This machine's speed drifts by a quarter over stretches of seconds:
timed in turns, both sides see the same stretch, so the drift cannot pass for a slowdown with
history (timed one after the other, a window caught in a slow stretch did, in one of three runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import asyncpg

from bench.core import Config, Profiler, Report, Row, say
from bot.credits import CreditService, Estimate
from bot.edits import EditOptions
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.db import Database, Tx
from storage.db import Row as DbRow
from storage.jobs import JobRepository, NewJob
from storage.postgres import PostgresDatabase
from storage.sqlite import SqliteDatabase
from storage.store import open_db
from tests.postgres import find_server

NAME = "ledger"
GUILD = 1
# Jobs in each timed window of one member's history.
WINDOW = 500
ESTIMATE = Estimate(credits=14, usd_micros=133_000, images=1)
T = TypeVar("T")


async def _jobs(db: Database, users: list[int]) -> list[tuple[int, int]]:
    repo = JobRepository(db)
    made = []
    for user in users:
        job = await repo.insert(
            NewJob(
                guild_id=GUILD, channel_id=2, user_id=user, prompt="bench", options=EditOptions(), inputs=[]
            )
        )
        made.append((job.id, user))
    return made


async def _reserve_capture(credits: CreditService, jobs: list[tuple[int, int]]) -> float:
    started = time.perf_counter()
    for job_id, user in jobs:
        await credits.reserve(guild_id=GUILD, user_id=user, role_ids=(), job_id=job_id, estimate=ESTIMATE)
        await credits.settle(job_id, delivered_images=1)
    return time.perf_counter() - started


def _service(db: Database) -> CreditService:
    return CreditService(
        db,
        CreditsSettings(default_allowance=1_000_000_000, confirm_above=1_000_000_000),
        BudgetSettings(),
    )


async def _sqlite_baseline(path: Path, rows: int) -> float:
    conn = await aiosqlite.connect(str(path))
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    now = "2026-01-01T00:00:00.000000+00:00"
    started = time.perf_counter()
    for n in range(rows):
        await conn.execute(
            "INSERT INTO ledger (guild_id, user_id, kind, amount, idempotency_key, created_at) "
            "VALUES (?, ?, 'grant', 1, ?, ?)",
            (GUILD, 1000 + n % 100, f"bench:{n}", now),
        )
        await conn.commit()
    elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed


async def _postgres_baseline(url: str, rows: int) -> float:
    conn = await asyncpg.connect(url)
    now = "2026-01-01T00:00:00.000000+00:00"
    try:
        started = time.perf_counter()
        for n in range(rows):  # outside a transaction block, each statement commits on its own
            await conn.execute(
                "INSERT INTO ledger (guild_id, user_id, kind, amount, idempotency_key, created_at) "
                "VALUES ($1, $2, 'grant', 1, $3, $4)",
                GUILD,
                1000 + n % 100,
                f"bench:{n}",
                now,
            )
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _store_floor(url: str, rows: int) -> float:
    """The baseline's rows through the store's own transactions (`Database.transaction`): the
    floor a job's two transactions stand on."""
    db = await open_db(url)
    now = "2026-01-01T00:00:00.000000+00:00"
    try:
        started = time.perf_counter()
        for n in range(rows):
            async with db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO ledger (guild_id, user_id, kind, amount, idempotency_key, created_at) "
                    "VALUES (?, ?, 'grant', 1, ?, ?)",
                    (GUILD, 1000 + n % 100, f"floor:{n}", now),
                )
        return time.perf_counter() - started
    finally:
        await db.close()


def sql_shape(sql: str) -> str:
    """A statement with its literals blanked and whitespace squeezed, cut to a readable length."""
    text = re.sub(r"'[^']*'|\b\d+\b", "?", " ".join(sql.split()))
    return text if len(text) <= 110 else text[:107] + "..."


def _windows(history: int) -> list[tuple[int, int]]:
    """(first, last) job numbers of a member's history timed on their own: their first `WINDOW`,
    and the `WINDOW` up to their 1,000th and 10,000th where the history is that long."""
    return [(n - WINDOW + 1, n) for n in (WINDOW, 1000, 10_000) if n <= history]


class _TimedTx:
    """A transaction whose statements add their count and wall time to `seen`, by shape."""

    def __init__(self, tx: Tx, seen: dict[str, list[float]]) -> None:
        self._tx, self._seen = tx, seen

    async def _timed(self, what: str, work: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await work
        finally:
            self._seen.setdefault(what, []).append(time.perf_counter() - started)

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return await self._timed(sql_shape(sql), self._tx.execute(sql, params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._timed(sql_shape(sql), self._tx.executemany(sql, rows))

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> DbRow | None:
        return await self._timed(sql_shape(sql), self._tx.fetch_one(sql, params))

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[DbRow]:
        return await self._timed(sql_shape(sql), self._tx.fetch_all(sql, params))

    async def lock(self, key: str) -> None:
        await self._timed("advisory lock", self._tx.lock(key))


class _RoundTrips:
    """Where a job's time goes on PostgreSQL, where every statement is a round trip to the
    server: the statements, and the rest of each transaction (taking a pooled connection, BEGIN,
    and COMMIT, which waits for the server's WAL flush). Hooks the database's own transactions
    (`_begin`, below the joining of nested ones) for the run; no product file changes."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self.statements: dict[str, list[float]] = {}
        self.transactions: list[float] = []

    def __enter__(self) -> _RoundTrips:
        begin = self._db._begin

        @contextlib.asynccontextmanager
        async def timed() -> AsyncIterator[Tx]:
            started = time.perf_counter()
            async with begin() as tx:
                yield _TimedTx(tx, self.statements)
            self.transactions.append(time.perf_counter() - started)

        setattr(self._db, "_begin", timed)  # noqa: B010 (an instance attribute over the method)
        return self

    def __exit__(self, *exc: object) -> None:
        delattr(self._db, "_begin")

    def summary(self, jobs: int) -> list[str]:
        in_statements = sum(sum(times) for times in self.statements.values())
        in_transactions = sum(self.transactions)
        count = sum(len(times) for times in self.statements.values())
        ranked = sorted(self.statements.items(), key=lambda item: -sum(item[1]))
        return [
            f"{in_transactions / jobs * 1000:.2f} ms per job in {len(self.transactions) / jobs:.1f} "
            f"transactions: {in_statements / jobs * 1000:.2f} ms in {count / jobs:.1f} statements "
            f"(round trips), {(in_transactions - in_statements) / jobs * 1000:.2f} ms in the rest "
            "(pool, BEGIN, COMMIT and its WAL flush). By statement, the costliest first:",
            *(
                f"  {len(times) / jobs:5.2f}/job {statistics.mean(times) * 1000:6.2f} ms  {sql}"
                for sql, times in ranked[:14]
            ),
        ]


@dataclass
class _Store:
    """One backend under measurement: where its product database is, and its baseline."""

    label: str
    url: str
    baseline: Callable[[int], Awaitable[float]]
    # An empty database of the same store, for the same rows written through its transactions.
    floor_url: str


async def _profiled(db: Database, credits: CreditService, count: int) -> dict[str, Any]:
    """cProfile of `count` more jobs and the statements they made: on SQLite traced by its
    connection, on PostgreSQL timed round trip by round trip (a pass of its own, without
    cProfile's overhead in the times)."""
    extra = await _jobs(db, [1000 + n % 100 for n in range(count)])
    statements: Counter[str] = Counter()
    if isinstance(db, SqliteDatabase):
        db.conn.set_trace_callback(lambda sql: statements.update([sql_shape(sql)]))
    async with Profiler() as profiler:
        await _reserve_capture(credits, extra)
    if isinstance(db, SqliteDatabase):
        db.conn.set_trace_callback(None)
    profile = profiler.summary() or {}
    if isinstance(db, PostgresDatabase):
        timed = await _jobs(db, [1000 + n % 100 for n in range(count)])
        with _RoundTrips(db) as trips:
            await _reserve_capture(credits, timed)
        profile["summary"] = trips.summary(count)
    if statements:
        per_job = sum(statements.values()) / len(extra)
        profile["summary"] = [
            f"{per_job:.1f} SQL statements per job (reserve + capture); the store floor makes 3 "
            "(BEGIN, INSERT, COMMIT). Most frequent:",
            *(f"  {n / len(extra):5.2f}/job  {sql}" for sql, n in statements.most_common(14)),
        ]
    return {"note": f"{count} extra profiled jobs (figures not used)", **profile}


async def _measure(store: _Store, cfg: Config, count: int, history: int) -> tuple[list[Row], dict[str, Any]]:
    """The rows and details of one store: the spread rate, and one member's history windows."""
    say(f"{store.label} baseline: {count} raw inserts + commits")
    base_s = await store.baseline(count)
    floor_s = await _store_floor(store.floor_url, count)

    say(f"{store.label}: {count} jobs over 100 members: reserve + capture")
    db = await open_db(store.url)
    try:
        credits = _service(db)
        jobs = await _jobs(db, [1000 + n % 100 for n in range(count)])
        spread_s = await _reserve_capture(credits, jobs)

        say(f"{store.label}: one member's first {history} jobs, timed at jobs {_windows(history)}")
        single = await _jobs(db, [5] * history)
        windows: dict[tuple[int, int], tuple[float, float]] = {}
        done = 0
        for number, (first, last) in enumerate(_windows(history)):
            await _reserve_capture(credits, single[done : first - 1])
            # A new member's first jobs, timed in turns with the window's: the same seconds of
            # this machine, whose speed drifts by a quarter over some seconds, for both.
            fresh = await _jobs(db, [10_000 + number] * (last - first + 1))
            block = WINDOW // 5
            theirs, new = [], []
            for n in range(0, last - first + 1, block):
                theirs.append(await _reserve_capture(credits, single[first - 1 + n : first - 1 + n + block]))
                new.append(await _reserve_capture(credits, fresh[n : n + block]))
            windows[first, last] = (block / statistics.median(theirs), block / statistics.median(new))
            done = last
        profile = await _profiled(db, credits, count // 5) if cfg.profile else None
    finally:
        await db.close()

    rate, base_rate = count / spread_s, count / base_s
    details: dict[str, Any] = {
        "ms_per_job": round(spread_s / count * 1000, 3),
        "baseline_ms_per_row": round(base_s / count * 1000, 3),
        "store_floor_ms_per_row": round(floor_s / count * 1000, 3),
        "single_member_jobs_per_s": {
            f"jobs {a:,}-{b:,}": {"theirs": round(r, 1), "a new member's, in turns": round(new, 1)}
            for (a, b), (r, new) in windows.items()
        },
        "profile": profile,
    }
    sqlite = store.label == "SQLite"
    rows = [
        Row(
            NAME,
            "reserve + capture, 100 members (jobs/s)",
            rate,
            "jobs/s",
            base_rate,
            goal="≥ 2,000 jobs/s" if sqlite else "",
            met=rate >= 2000 if sqlite else None,
            higher_is_better=True,
            label=store.label,
        ),
        Row(
            NAME,
            "… insert + commit through the store (rows/s)",
            count / floor_s,
            "rows/s",
            base_rate,
            higher_is_better=True,
            label=store.label,
        ),
        *(
            Row(
                NAME,
                f"… one member, jobs {a:,}-{b:,} of its history",
                r,
                "jobs/s",
                new,
                goal="flat: ≥ 0.8× a new member's",
                met=r >= 0.8 * new,
                higher_is_better=True,
                label=store.label,
            )
            for (a, b), (r, new) in list(windows.items())[1:]
        ),
    ]
    return rows, details


async def run(cfg: Config) -> Report:
    count = cfg.pick(500, 5000)
    history = cfg.pick(1000, 10_000)
    report = Report(NAME)
    report.details = {"jobs": count, "members": 100}

    base_path = cfg.workdir / "baseline.db"
    await (await open_db(base_path)).close()
    stores = [
        _Store(
            "SQLite",
            str(cfg.workdir / "ledger.db"),
            functools.partial(_sqlite_baseline, base_path),
            str(cfg.workdir / "floor.db"),
        )
    ]
    server, why = await asyncio.to_thread(find_server)
    made: list[str] = []
    if server is None:
        report.notes.append(f"ledger on PostgreSQL not measured: no server ({why})")
    else:
        product, baseline, floor = (server.create_database() for _ in range(3))
        made += [product, baseline, floor]
        await (await open_db(server.url(baseline))).close()
        stores.append(
            _Store(
                "PostgreSQL",
                server.url(product),
                functools.partial(_postgres_baseline, server.url(baseline)),
                server.url(floor),
            )
        )
    try:
        for store in stores:
            rows, details = await _measure(store, cfg, count, history)
            report.rows += rows
            report.details[store.label] = details
    finally:
        if server is not None:
            for name in made:
                server.drop_database(name)
            server.close()
    for store in stores:
        profile = report.details[store.label].pop("profile")
        if profile is None:
            continue
        if store.label == "PostgreSQL":  # no goal to miss: its breakdown goes under the table
            report.details[store.label]["where_the_time_goes"] = profile["summary"]
            report.notes.append(f"PostgreSQL ledger: {profile['summary'][0]}")
        missed = any(row.met is False for row in report.rows if row.label == store.label)
        if missed and report.profile is None:  # the digest under the table shows one profile
            report.profile = {**profile, "note": f"{store.label}: {profile['note']}"}
    return report
