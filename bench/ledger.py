"""Ledger: reservations plus captures per second through `CreditService`, on a real database.

For each job: `reserve` (its own transaction: kept balance, caps, reserve entry, hold row,
balance update, job mirror) and then `settle` with one delivered image (capture entry, settlement mirror), one
after the other, as the job runner does. Job rows are made beforehand, untimed. Jobs are
spread over 100 members of one server, so each member's history grows as it would in use.

Baseline, same run: raw aiosqlite — one INSERT into the same `ledger` table and one COMMIT per
row, with the product's connection pragmas (WAL, synchronous=NORMAL). The same rows written
through the store's own transactions (`Database.transaction`) are shown against it too: the
floor a job's two transactions stand on.

A reservation reads the member's kept balance, not their history, so the rate must not depend on
how long that history is: a second set of figures follows one member through 10,000 jobs and
times their first 100 (the baseline) against the 100 up to their 1,000th and 10,000th.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiosqlite

from bench.core import Config, Profiler, Report, Row, say
from bot.credits import CreditService, Estimate
from bot.edits import EditOptions
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.db import Database
from storage.jobs import JobRepository, NewJob
from storage.sqlite import SqliteDatabase
from storage.store import open_db

NAME = "ledger"
GUILD = 1
ESTIMATE = Estimate(credits=14, usd_micros=133_000, images=1)


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


async def _baseline(path: Path, rows: int) -> float:
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


async def _store_floor(db: Database, rows: int) -> float:
    now = "2026-01-01T00:00:00.000000+00:00"
    started = time.perf_counter()
    for n in range(rows):
        async with db.transaction() as tx:
            await tx.execute(
                "INSERT INTO ledger (guild_id, user_id, kind, amount, idempotency_key, created_at) "
                "VALUES (?, ?, 'grant', 1, ?, ?)",
                (GUILD, 1000 + n % 100, f"floor:{n}", now),
            )
    return time.perf_counter() - started


def _shape(sql: str) -> str:
    """A statement with its literals blanked and whitespace squeezed, cut to a readable length."""
    text = re.sub(r"'[^']*'|\b\d+\b", "?", " ".join(sql.split()))
    return text if len(text) <= 110 else text[:107] + "..."


def _windows(history: int) -> list[tuple[int, int]]:
    """(first, last) job numbers of a member's history timed on their own: their first 100, and
    the 100 up to ~1,000 and ~10,000 where the history is that long."""
    return [(n - 99, n) for n in (100, 1000, 10_000) if n <= history]


async def run(cfg: Config) -> Report:
    count = cfg.pick(500, 5000)
    history = cfg.pick(1000, 10_000)
    report = Report(NAME)
    details: dict[str, Any] = {"jobs": count, "members": 100}

    say(f"baseline: {count} raw inserts + commits")
    base_db = await open_db(cfg.workdir / "baseline.db")
    await base_db.close()
    base_s = await _baseline(cfg.workdir / "baseline.db", count)
    floor_db = await open_db(cfg.workdir / "floor.db")
    try:
        floor_s = await _store_floor(floor_db, count)
    finally:
        await floor_db.close()

    say(f"{count} jobs over 100 members: reserve + capture")
    db = await open_db(cfg.workdir / "ledger.db")
    try:
        credits = _service(db)
        jobs = await _jobs(db, [1000 + n % 100 for n in range(count)])
        spread_s = await _reserve_capture(credits, jobs)

        say(f"one member's first {history} jobs, timed at jobs {_windows(history)}")
        single = await _jobs(db, [5] * history)
        windows: dict[tuple[int, int], float] = {}
        done = 0
        for first, last in _windows(history):
            await _reserve_capture(credits, single[done : first - 1])
            # Five blocks of 20, the median block: one burst of load from elsewhere on the machine
            # must not pass for a slowdown with history.
            blocks = [await _reserve_capture(credits, single[n : n + 20]) for n in range(first - 1, last, 20)]
            windows[first, last] = 20 / statistics.median(blocks)
            done = last

        profile = None
        if cfg.profile:
            extra = await _jobs(db, [1000 + n % 100 for n in range(count // 5)])
            statements: Counter[str] = Counter()
            assert isinstance(db, SqliteDatabase)
            db.conn.set_trace_callback(lambda sql: statements.update([_shape(sql)]))
            async with Profiler() as profiler:
                await _reserve_capture(credits, extra)
            db.conn.set_trace_callback(None)
            profile = profiler.summary() or {}
            per_job = sum(statements.values()) / len(extra)
            profile["summary"] = [
                f"{per_job:.1f} SQL statements per job (reserve + capture); the floor makes 3 "
                "(BEGIN, INSERT, COMMIT). Most frequent:",
                *(f"  {n / len(extra):5.2f}/job  {sql}" for sql, n in statements.most_common(14)),
            ]
    finally:
        await db.close()

    rate, base_rate = count / spread_s, count / base_s
    opening = next(iter(windows.values()))
    details.update(
        {
            "ms_per_job": round(spread_s / count * 1000, 3),
            "baseline_ms_per_row": round(base_s / count * 1000, 3),
            "store_floor_ms_per_row": round(floor_s / count * 1000, 3),
            "single_member_jobs_per_s": {f"jobs {a:,}-{b:,}": round(r, 1) for (a, b), r in windows.items()},
        }
    )
    report.rows = [
        Row(
            NAME,
            "reserve + capture, 100 members (jobs/s)",
            rate,
            "jobs/s",
            base_rate,
            goal="≥ 2,000 jobs/s",
            met=rate >= 2000,
            higher_is_better=True,
        ),
        Row(
            NAME,
            "… insert + commit through the store (rows/s)",
            count / floor_s,
            "rows/s",
            base_rate,
            higher_is_better=True,
        ),
        *(
            Row(
                NAME,
                f"… one member, jobs {a:,}-{b:,} of its history",
                r,
                "jobs/s",
                opening,
                goal="flat: ≥ 0.8× its first 100",
                met=r >= 0.8 * opening,
                higher_is_better=True,
            )
            for (a, b), r in list(windows.items())[1:]
        ),
    ]
    report.details = details
    if profile is not None:
        report.profile = {"note": f"{count // 5} extra profiled jobs (figures not used)", **profile}
    return report
