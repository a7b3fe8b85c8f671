"""The embedded store: one SQLite file, one connection, one writer at a time.

Migrations are numbered `.sql` files in `migrations/sqlite/`; each one wraps itself in a
transaction that ends by setting `PRAGMA user_version`, so a crash mid-migration leaves the
previous version intact and the runner simply applies the file again.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from storage.db import ReadsThrough, Row, SchemaTooNew, Tx, migrations

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations") / "sqlite"
BUSY_TIMEOUT_MS = 5000


def latest_version() -> int:
    return len(migrations(MIGRATIONS_DIR))


async def connect(path: Path | str) -> aiosqlite.Connection:
    """A connection with the pragmas every part of the app relies on.

    `isolation_level=None` leaves transactions to explicit BEGIN/COMMIT, so a multi-statement
    change (a job row plus its ledger reservation) is one unit.
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    return conn


async def schema_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: aiosqlite.Connection) -> list[int]:
    """Apply every migration newer than the database; returns the versions applied."""
    known = migrations(MIGRATIONS_DIR)
    current = await schema_version(conn)
    if current > len(known):
        raise SchemaTooNew(current, len(known))
    applied = []
    for migration in known[current:]:
        log.info("applying migration %s", migration.path.name)
        await conn.executescript(migration.path.read_text(encoding="utf-8"))
        now = await schema_version(conn)
        if now != migration.version:
            raise RuntimeError(
                f"migration {migration.path.name} did not set user_version to {migration.version}"
            )
        applied.append(migration.version)
    return applied


def backup(source: Path, destination: Path) -> Path:
    """Copy a live database with SQLite's online backup API (consistent while others write).

    Synchronous: run it in a thread. A destination that is a directory gets a timestamped
    file name inside it.
    """
    if destination.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        destination = destination / f"{source.stem}-{stamp}.db"
    destination.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(destination)) as dst:
        src.backup(dst)
    return destination


@asynccontextmanager
async def migrating(path: Path | str) -> AsyncIterator[None]:
    """Processes opening one file at once take turns to migrate it: each reads the schema version
    before applying the next file, so two starting on a new file would both apply the first one
    and one of them would fail on a table the other had just made."""
    if str(path) == ":memory:":
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(f"{path}.migrate-lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing the descriptor releases the lock


async def migrate_with_backup(path: Path) -> tuple[list[int], Path | None]:
    """Bring the schema up to date, first copying a database that has data and needs changes."""
    async with migrating(path):
        conn = await connect(path)
        try:
            current = await schema_version(conn)
            copy = None
            if 0 < current < latest_version():
                copy = await asyncio.to_thread(
                    backup, path, path.with_name(f"{path.stem}.pre-v{latest_version()}.db")
                )
                log.info("backed up the database to %s before migrating", copy)
            return await migrate(conn), copy
        finally:
            await conn.close()


async def open_sqlite(path: Path | str) -> SqliteDatabase:
    async with migrating(path):
        conn = await connect(path)
        try:
            await migrate(conn)
        except BaseException:
            await conn.close()
            raise
    return SqliteDatabase(conn)


class _SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        # One trip to aiosqlite's thread: the finished cursor is left to the garbage collector,
        # as executemany's is, rather than closed in a second trip.
        cursor = await self._conn.execute(sql, tuple(params))
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._conn.executemany(sql, [tuple(row) for row in rows])

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        # One trip to aiosqlite's thread, not three (execute, fetchone, close): each trip costs
        # two thread wake-ups, more than a small statement itself.
        rows = list(await self._conn.execute_fetchall(sql, tuple(params)))
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, tuple(params)))

    async def lock(self, key: str) -> None:
        """Every SQLite transaction here is BEGIN IMMEDIATE: it already holds the only write lock."""


class SqliteDatabase(ReadsThrough):
    """One connection shared by the whole process, with transactions that cannot interleave.

    aiosqlite runs statements in order on one thread, but coroutines interleave between them:
    without the lock, another task's write could land inside (and be rolled back with) our
    transaction, and another task's read could see our uncommitted rows.
    """

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__()
        self.conn = conn
        self._tx = _SqliteTx(conn)
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[Tx]:
        async with self._lock:
            # BEGIN inside the try: a task cancelled while BEGIN waits for another process's
            # write lock has still queued it on the connection's thread, where it runs; the
            # rollback queued after it ends that transaction instead of leaving the shared
            # connection inside it (every later BEGIN would fail).
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
                yield self._tx
            except BaseException:
                await self.conn.rollback()
                raise
            await self.conn.commit()

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Tx]:
        async with self._lock:
            yield self._tx

    async def ping(self) -> bool:
        return await self.fetch_one("SELECT 1") is not None

    async def close(self) -> None:
        await self.conn.close()
