"""Start-up to ready with 10,000 jobs and 100,000 ledger rows, against an empty database.

"Ready" is what a member needs: the gateway session is READY, commands are synced, the web
server is up and the job service accepts edits (`Retouch.setup_hook` finished, including
recovery). Each start uses a fresh copy of a prepared database file, and starts alternate
between the empty and the full database so that machine noise falls on both alike.

The full database: 10,000 finished jobs (90 % done with an output row, 10 % failed or
cancelled), each with its reserve and capture/release entry and hold, plus 80,000 grants
spread over 1,000 members, making 100,000 ledger rows. The empty one has the same schema.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import statistics
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import cogs.app
from bench.core import Config, Profiler, Report, Row, say
from bench.harness import World, retouch_settings, start_retouch
from bot.credits import CreditService
from bot.jobs import JobService
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.db import migrations
from storage.jobs import JobRepository
from storage.sqlite import MIGRATIONS_DIR
from storage.store import open_db

NAME = "startup"
JOBS = 10_000
LEDGER_ROWS = 100_000
MEMBERS = 1_000
GUILD = 123456789012345678


def _ts(n: int) -> str:
    return f"2026-0{1 + n % 9}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(n // 60) % 60:02d}.{n % 1000:03d}000+00:00"


# The rows are written at this schema version, then the product's own migrations bring the file
# up to date, as they would on an upgrade; so columns added later get the values they define.
DATA_SCHEMA = 3


def populate(path: Path, jobs: int = JOBS, ledger_rows: int = LEDGER_ROWS) -> dict[str, int]:
    """Fill a database at schema version 3 directly with SQLite: what months of use leave behind."""
    with closing(sqlite3.connect(path)) as conn:
        for migration in migrations(MIGRATIONS_DIR)[:DATA_SCHEMA]:
            conn.executescript(migration.path.read_text(encoding="utf-8"))
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA foreign_keys = ON")
        job_rows: list[tuple[Any, ...]] = []
        outputs: list[tuple[Any, ...]] = []
        entries: list[tuple[Any, ...]] = []
        holds: list[tuple[Any, ...]] = []
        for n in range(1, jobs + 1):
            user = 10_000 + n % MEMBERS
            state = "done" if n % 10 else ("failed" if n % 20 else "cancelled")
            made = _ts(n)
            job_rows.append(
                (
                    n,
                    GUILD,
                    42,
                    user,
                    state,
                    f"prompt {n}",
                    '{"quality": "high"}',
                    "[]",
                    "runflow",
                    f"run-{n}",
                    14,
                    14 if state == "done" else 0,
                    133_000 if state == "done" else 0,
                    made,
                    made,
                    made,
                    made,
                )
            )
            holds.append((n, 1, 14, 133_000))
            entries.append((GUILD, user, "reserve", -14, n, f"job:{n}:reserve", made))
            if state == "done":
                outputs.append(
                    (n, 0, f"/nonexistent/{n}/output-0.png", "image/png", 1024, 1024, 1_000_000, made)
                )
                entries.append((GUILD, user, "capture", -14, n, f"job:{n}:capture", made))
            else:
                entries.append((GUILD, user, "release", 14, n, f"job:{n}:release", made))
        grants: list[tuple[Any, ...]] = [
            (GUILD, 10_000 + n % MEMBERS, "grant", 5, None, f"grant:bench-{n}", _ts(n))
            for n in range(ledger_rows - len(entries))
        ]
        conn.executemany(
            "INSERT INTO jobs (id, guild_id, channel_id, user_id, state, prompt, options, inputs, provider, "
            "run_id, credits_estimated, credits_charged, usd_micros, created_at, updated_at, submitted_at, "
            "completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            job_rows,
        )
        conn.executemany(
            "INSERT INTO job_outputs (job_id, idx, path, content_type, width, height, size, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            outputs,
        )
        conn.executemany(
            "INSERT INTO credit_holds (job_id, images, from_allowance, usd_micros) VALUES (?, ?, ?, ?)", holds
        )
        conn.executemany(
            "INSERT INTO ledger (guild_id, user_id, kind, amount, job_id, idempotency_key, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            entries + grants,
        )
        counts = {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("jobs", "ledger", "credit_holds", "job_outputs")
        }
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return counts


async def _prepared(workdir: Path) -> tuple[Path, Path, dict[str, int]]:
    """Both databases at the latest schema, migrated before any start is timed."""
    empty, full = workdir / "empty.db", workdir / "full.db"
    counts = await asyncio.to_thread(populate, full)
    for path in (empty, full):
        db = await open_db(path)
        await db.close()
    return empty, full, counts


class _Timed:
    """Wall time of open_db (connect + migrate) and of JobService.recover during one start."""

    def __init__(self, trace: bool = False) -> None:
        self.seconds: dict[str, float] = {}
        self.statements: list[str] = []
        self.trace = trace
        self._open_db = getattr(cogs.app, "open_db")  # noqa: B009 (a name cogs.app imports, not exports)
        self._recover = JobService.recover

    def __enter__(self) -> _Timed:
        timed = self

        async def open_db_timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                db = await timed._open_db(*args, **kwargs)
            finally:
                timed.seconds["open_db"] = time.perf_counter() - started
            if timed.trace:
                db.conn.set_trace_callback(timed.statements.append)
            return db

        async def recover_timed(service: JobService) -> None:
            started = time.perf_counter()
            try:
                await timed._recover(service)
            finally:
                timed.seconds["recover"] = time.perf_counter() - started

        setattr(cogs.app, "open_db", open_db_timed)  # noqa: B010
        setattr(JobService, "recover", recover_timed)  # noqa: B010
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(cogs.app, "open_db", self._open_db)  # noqa: B010
        setattr(JobService, "recover", self._recover)  # noqa: B010


async def _start_once(world: World, source: Path, workdir: Path, profile: bool = False) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(dir=workdir))
    shutil.copy(source, data / "retouch.db")
    settings = retouch_settings(world, data)
    with _Timed(trace=profile) as timed:
        async with Profiler(profile) as profiler:
            running = await start_retouch(settings)
    await running.stop()
    shutil.rmtree(data, ignore_errors=True)
    result: dict[str, Any] = {"ready_s": running.started_in, **timed.seconds, "profile": profiler.summary()}
    if profile:
        result["queries"] = await asyncio.to_thread(query_costs, source, timed.statements)
    return result


def query_costs(path: Path, statements: list[str], top: int = 5) -> list[dict[str, Any]]:
    """The start-up's SELECTs re-run one by one on the same database: time and query plan."""
    found: list[dict[str, Any]] = []
    with closing(sqlite3.connect(path)) as conn:
        for sql in dict.fromkeys(s for s in statements if s.lstrip().upper().startswith("SELECT")):
            started = time.perf_counter()
            conn.execute(sql).fetchall()
            elapsed = time.perf_counter() - started
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            found.append({"ms": round(elapsed * 1000, 2), "sql": " ".join(sql.split())[:160], "plan": plan})
    return sorted(found, key=lambda q: -q["ms"])[:top]


async def hot_queries(path: Path, calls: int = 50) -> dict[str, float]:
    """Median ms of the per-/edit database calls on this database: history makes them slower."""
    db = await open_db(path)
    try:
        repo = JobRepository(db)
        credits = CreditService(db, CreditsSettings(), BudgetSettings())
        timings: dict[str, list[float]] = {
            "count_open (every preflight and submit)": [],
            "balance (every preflight)": [],
        }
        for n in range(calls):
            started = time.perf_counter()
            await repo.count_open(10_000 + n, GUILD)
            timings["count_open (every preflight and submit)"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await credits.balance(GUILD, 10_000 + n)
            timings["balance (every preflight)"].append(time.perf_counter() - started)
    finally:
        await db.close()
    return {name: round(statistics.median(values) * 1000, 2) for name, values in timings.items()}


async def run(cfg: Config) -> Report:
    repeats = cfg.pick(2, 7)
    report = Report(NAME)
    say(f"preparing a database with {JOBS:,} jobs and {LEDGER_ROWS:,} ledger rows")
    empty, full, counts = await _prepared(cfg.workdir)
    results: dict[str, list[dict[str, Any]]] = {"empty": [], "full": []}
    async with await World.start() as world:
        await _start_once(world, empty, cfg.workdir)  # warm-up: imports, first connection
        for n in range(repeats):
            say(f"start {n + 1}/{repeats}: empty, then full")
            results["empty"].append(await _start_once(world, empty, cfg.workdir))
            results["full"].append(await _start_once(world, full, cfg.workdir))
        empty_s = statistics.median(r["ready_s"] for r in results["empty"])
        full_s = statistics.median(r["ready_s"] for r in results["full"])
        profile = None
        if cfg.profile:
            profiled = await _start_once(world, full, cfg.workdir, profile=True)
            profile = profiled["profile"] or {}
            profile["queries"] = profiled["queries"]
            profile["summary"] = [
                f"recover() took {profiled.get('recover', 0) * 1000:.0f} ms of this start; its SQL, re-run alone:",
                *(
                    f"  {q['ms']:7.1f} ms  {q['sql']}  [plan: {'; '.join(q['plan'])}]"
                    for q in profiled["queries"]
                ),
            ]

    hot = {"empty": await hot_queries(empty), "full": await hot_queries(full)}

    def med(kind: str, key: str) -> float | None:
        values = [r[key] for r in results[kind] if key in r]
        return round(statistics.median(values) * 1000, 1) if values else None

    report.rows = [
        Row(
            NAME,
            f"start-up to ready, {JOBS:,} jobs + {LEDGER_ROWS:,} ledger rows",
            full_s,
            "s",
            empty_s,
            goal="≤ 2× empty database",
            met=full_s <= 2 * empty_s,
        )
    ]
    report.details = {
        "rows": counts,
        "db_bytes": full.stat().st_size,
        "ready_s": {kind: [round(r["ready_s"], 3) for r in rs] for kind, rs in results.items()},
        "open_db_ms_median": {"empty": med("empty", "open_db"), "full": med("full", "open_db")},
        "recover_ms_median": {"empty": med("empty", "recover"), "full": med("full", "recover")},
        "per_edit_queries_ms_median": hot,
    }
    if profile is not None:
        report.details["startup_queries_rerun_alone"] = profile["queries"]
        if report.missed:
            report.profile = {"note": "one profiled start with the full database", **profile}
    return report
