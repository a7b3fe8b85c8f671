"""The store on each backend: migrations applied in order, idempotent and refusing a newer
database; transactions that leave nothing behind when they fail."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.edits import EditOptions
from storage import postgres, sqlite
from storage.db import Database, SchemaTooNew
from storage.jobs import JobRepository, JobState, NewJob
from storage.sqlite import SqliteDatabase, connect, open_sqlite, schema_version
from storage.store import StoreUrl, migrate_store, open_db
from tests.sql import run_sql

ROOT = Path(__file__).resolve().parents[2]


def latest_version(dialect: str) -> int:
    return sqlite.latest_version() if dialect == "sqlite" else postgres.latest_version()


def scalar(conn: sqlite3.Connection, sql: str) -> object:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


async def test_fresh_database_gets_every_table(tmp_path: Path) -> None:
    db = await open_sqlite(tmp_path / "r.db")
    conn = db.conn
    try:
        assert schema_version(conn) == sqlite.latest_version()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"jobs", "job_outputs", "ledger", "allowances", "guild_settings", "member_blocks"} <= tables
        assert scalar(conn, "PRAGMA journal_mode") == "wal"
        assert scalar(conn, "PRAGMA foreign_keys") == 1
    finally:
        await db.close()


async def test_migrating_twice_changes_nothing(store_url: str) -> None:
    db = await open_db(store_url)
    await db.close()
    applied, version, _ = await migrate_store(store_url)
    assert applied == []
    assert version == latest_version(StoreUrl.parse(store_url).dialect)


async def test_newer_schema_is_refused(store_url: str) -> None:
    db = await open_db(store_url)
    try:
        newer = latest_version(db.dialect) + 1
        if db.dialect == "sqlite":
            await run_sql(db, f"PRAGMA user_version = {newer}")
        else:
            await run_sql(
                db, "INSERT INTO schema_version (version, applied_at) VALUES (?, 'later')", (newer,)
            )
    finally:
        await db.close()
    with pytest.raises(SchemaTooNew, match="upgrade Retouch"):
        await open_db(store_url)


async def test_a_failed_transaction_leaves_nothing_behind(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO audit_log (actor_id, action, created_at) VALUES (1, 'x', 'now')")
            raise RuntimeError("crash between two writes")
    row = await db.fetch_one("SELECT COUNT(*) FROM audit_log")
    assert row is not None and row[0] == 0


async def test_execute_counts_the_rows_it_changed(db: Database) -> None:
    async with db.transaction() as tx:
        for actor in (1, 2, 3):
            assert (
                await tx.execute(
                    "INSERT INTO audit_log (actor_id, action, created_at) VALUES (?, 'x', 'now')", (actor,)
                )
                == 1
            )
        assert await tx.execute("UPDATE audit_log SET action = 'y' WHERE actor_id >= ?", (2,)) == 2
        assert await tx.execute("DELETE FROM audit_log WHERE actor_id = ?", (9,)) == 0


async def test_a_read_never_sees_another_tasks_uncommitted_write(db: Database) -> None:
    """Reads made while another task's transaction is open must not see rows that its rollback
    then takes away (on SQLite one connection is shared by every task, so the read must wait)."""
    await _read_while_another_task_writes(db)


async def _read_while_another_task_writes(db: Database) -> None:
    import asyncio

    from storage.jobs import JobRepository, NewJob

    repo = JobRepository(db)
    inserted, release = asyncio.Event(), asyncio.Event()

    async def write_then_roll_back() -> None:
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await conn.execute(
                    "INSERT INTO jobs (id, channel_id, user_id, state, prompt, created_at, updated_at) "
                    "VALUES (7, 1, 1, 'queued', 'p', '2026', '2026')"
                )
                inserted.set()
                await release.wait()
                raise RuntimeError("the reservation was refused")

    writer = asyncio.create_task(write_then_roll_back())
    await inserted.wait()
    reader = asyncio.create_task(repo.get(7))
    await asyncio.sleep(0)  # let the read start while the transaction is still open
    release.set()
    seen = await reader
    await writer
    assert seen is None
    assert await repo.get(7) is None
    # Inside its own transaction a task still reads what it wrote.
    async with db.transaction():
        job = await repo.insert(
            NewJob(guild_id=1, channel_id=2, user_id=3, prompt="p", options=EditOptions(), inputs=[])
        )
        assert await repo.get(job.id) is not None


async def test_processes_opening_a_new_file_at_once_all_start(tmp_path: Path) -> None:
    """Several processes sharing one new database each migrate it on start; without taking
    turns, two apply the first migration and one fails on a table the other just made."""
    opener = "import asyncio, sys\nfrom storage.sqlite import open_sqlite\n" + (
        "async def main():\n    db = await open_sqlite(sys.argv[1])\n    await db.close()\nasyncio.run(main())\n"
    )
    for attempt in range(4):
        path = tmp_path / f"r{attempt}.db"
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", opener, str(path), stderr=asyncio.subprocess.PIPE, cwd=ROOT
            )
            for _ in range(8)
        ]
        outcomes = [
            (await process.wait(), (await process.stderr.read()).decode())
            for process in processes
            if process.stderr
        ]
        assert [code for code, _ in outcomes] == [0] * 8, [err for code, err in outcomes if code]
        db = await open_sqlite(path)
        try:
            row = await db.fetch_one("PRAGMA user_version")
            assert row is not None and row[0] == sqlite.latest_version()
        finally:
            await db.close()


@dataclass
class LockedElsewhere:
    """A SQLite store whose write lock another connection (another process) holds."""

    db: SqliteDatabase
    other: sqlite3.Connection

    async def write(self) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("INSERT INTO audit_log (actor_id, action, created_at) VALUES (1, 'x', 'now')")

    async def written(self) -> int:
        row = await self.db.fetch_one("SELECT COUNT(*) FROM audit_log")
        assert row is not None
        return int(row[0])


@pytest.fixture
async def locked_elsewhere(tmp_path: Path) -> AsyncIterator[LockedElsewhere]:
    path = tmp_path / "r.db"
    db = await open_sqlite(path)
    other = connect(path)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield LockedElsewhere(db, other)
    finally:
        other.close()
        await db.close()


async def test_a_transaction_cancelled_while_waiting_for_the_write_lock_leaves_none_open(
    locked_elsewhere: LockedElsewhere,
) -> None:
    """Another process holds the write lock; a task waiting in BEGIN is cancelled (a shutdown, a
    timeout). Its BEGIN still runs once the lock frees: the connection must not stay inside it."""
    waiting = asyncio.create_task(locked_elsewhere.write())
    done, _ = await asyncio.wait([waiting], timeout=0.3)
    assert not done  # still waiting in BEGIN for the other connection's lock
    waiting.cancel()
    locked_elsewhere.other.rollback()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await locked_elsewhere.write()
    assert await locked_elsewhere.written() == 1


async def test_a_transaction_waits_for_another_process_without_holding_up_the_loop(
    locked_elsewhere: LockedElsewhere,
) -> None:
    """Statements run on the event loop, but waiting for another process's write lock (up to the
    busy timeout) does not: the loop keeps running, and the write lands once the lock frees."""
    waiting = asyncio.create_task(locked_elsewhere.write())
    done, _ = await asyncio.wait([waiting], timeout=0.3)
    assert not done  # the loop ran this line while the write waited
    locked_elsewhere.other.rollback()
    await waiting
    assert await locked_elsewhere.written() == 1


async def test_a_failed_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    """A COMMIT that fails (here a deferred foreign key) leaves SQLite inside the transaction:
    unless it is rolled back, every later BEGIN on the shared connection fails."""
    db = await open_sqlite(tmp_path / "r.db")
    try:
        with pytest.raises(sqlite3.IntegrityError):
            async with db.transaction() as tx:
                await tx.execute("PRAGMA defer_foreign_keys = ON")
                await tx.execute(
                    "INSERT INTO credit_holds (job_id, images, from_allowance, usd_micros) VALUES (404, 1, 0, 0)"
                )
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO audit_log (actor_id, action, created_at) VALUES (1, 'x', 'now')")
        row = await db.fetch_one("SELECT COUNT(*) FROM audit_log")
        assert row is not None and row[0] == 1
    finally:
        await db.close()


async def test_checkpoints_keep_the_log_small_under_writes_that_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store checkpoints itself (SQLite's automatic one would run inside a COMMIT on the
    loop). Writes that never pause leave each checkpoint running beside them a little behind,
    so the log would grow for as long as they last, but for the ones that copy it whole."""
    monkeypatch.setattr(sqlite, "CHECKPOINT_EVERY", 20)
    monkeypatch.setattr(sqlite, "WHOLE_EVERY", 100)
    path = tmp_path / "r.db"
    db = await open_sqlite(path)
    try:
        for n in range(2000):
            async with db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO audit_log (actor_id, action, created_at) VALUES (?, ?, 'now')",
                    (n, "x" * 3000),
                )
        # The log file keeps the largest size it reached; each row wrote four pages (frames).
        frames = (await asyncio.to_thread(Path(f"{path}-wal").stat)).st_size // 4096
        assert frames < 1000  # 8,000 without checkpoints
    finally:
        await db.close()


async def test_a_short_read_runs_inline_and_a_long_one_on_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read outside a transaction went to the connection's thread and back, holding the
    store's lock: 13 hops an edit. A short one now runs on the loop; one that runs past its
    budget of SQLite steps (a member's whole history) stops and runs again on the thread."""
    db = await open_sqlite(tmp_path / "r.db")
    hops: list[object] = []
    on_thread = db.on_thread

    async def counted(work: Any) -> Any:
        hops.append(work)
        return await on_thread(work)

    monkeypatch.setattr(db, "on_thread", counted)
    try:
        await run_sql(db, "INSERT INTO audit_log (actor_id, action, created_at) VALUES (1, 'x', 'now')")
        hops.clear()
        row = await db.fetch_one("SELECT actor_id FROM audit_log WHERE id = 1")
        assert row is not None and row[0] == 1
        assert hops == []
        long = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 200000) "
        row = await db.fetch_one(long + "SELECT COUNT(*) FROM n")
        assert row is not None and row[0] == 200_000
        rows = await db.fetch_all(long + "SELECT x FROM n WHERE x % 50000 = 0")
        assert [r[0] for r in rows] == [50_000, 100_000, 150_000, 200_000]
        assert len(hops) == 2
        # The connection is left as it was: a write transaction of any length runs unbudgeted.
        async with db.transaction() as tx:
            assert await tx.fetch_one(long + "SELECT COUNT(*) FROM n") is not None
        assert len(hops) == 2
    finally:
        await db.close()


async def test_a_job_s_insert_and_moves_return_their_row_from_the_write_itself(tmp_path: Path) -> None:
    """Every edit moves its row four times; each move read the row again after its commit, one
    more statement each, and a row another writer could have changed in between."""
    db = await open_db(tmp_path / "moves.db")
    try:
        repo = JobRepository(db)
        assert isinstance(db, SqliteDatabase)
        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        job = await repo.insert(
            NewJob(guild_id=1, channel_id=2, user_id=3, prompt="p", options=EditOptions(), inputs=[])
        )
        moved = await repo.move(job.id, [JobState.QUEUED], JobState.SUBMITTING, attempts=1)
        assert moved is not None and (moved.state, moved.attempts) == (JobState.SUBMITTING, 1)
        assert await repo.move(job.id, [JobState.QUEUED], JobState.RUNNING) is None
        assert not [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")], statements
        assert moved == await repo.get(job.id)
    finally:
        await db.close()
