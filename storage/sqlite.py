"""The embedded store: one SQLite file, one connection, one writer at a time.

Migrations are numbered `.sql` files in `migrations/sqlite/`; each one wraps itself in a
transaction that ends by setting `PRAGMA user_version`, so a crash mid-migration leaves the
previous version intact and the runner simply applies the file again.

A write transaction's statements run on the event loop, inline: on a row found through an index
they take microseconds, less than one hop to a thread and back. What can take longer runs on the
connection's own thread: waiting for another process's write lock, and the checkpoints that copy
the write-ahead log into the database (and fsync both). A read outside a transaction starts
inline too, with a budget of SQLite steps (`READ_STEPS`): one that would scan a member's whole
history, or finds the database busy, stops and runs again on the thread. An edit made 13 reads
outside a transaction, each a hop to the thread and back holding the store's lock: 6 ms of an
edit's time, and more under load.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from storage.db import ReadsThrough, Row, SchemaTooNew, Tx, migrations

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations") / "sqlite"
BUSY_TIMEOUT_MS = 5000
PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)
# Commits between two checkpoints, and between two that hold the writer (`Checkpoints`).
# SQLite's own, every 1,000 pages written, would run inside a COMMIT on the event loop; a
# reservation and its settlement write about ten.
CHECKPOINT_EVERY = 100
WHOLE_EVERY = 1000
# A read outside a transaction runs inline for up to READ_STEPS × STEP_CHECK of SQLite's virtual
# machine instructions (about a millisecond); past that it moves to the connection's thread.
STEP_CHECK = 1000
READ_STEPS = 50


def latest_version() -> int:
    return len(migrations(MIGRATIONS_DIR))


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection with the pragmas every part of the app relies on.

    `isolation_level=None` leaves transactions to explicit BEGIN/COMMIT, so a multi-statement
    change (a job row plus its ledger reservation) is one unit. Blocking: the store calls it on
    its thread, tools and tests where they like.
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply every migration newer than the database; returns the versions applied. Blocking."""
    known = migrations(MIGRATIONS_DIR)
    current = schema_version(conn)
    if current > len(known):
        raise SchemaTooNew(current, len(known))
    applied = []
    for migration in known[current:]:
        log.info("applying migration %s", migration.path.name)
        conn.executescript(migration.path.read_text(encoding="utf-8"))
        now = schema_version(conn)
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


def _migrate_with_backup(path: Path) -> tuple[list[int], Path | None]:
    with closing(connect(path)) as conn:
        current = schema_version(conn)
        copy = None
        if 0 < current < latest_version():
            copy = backup(path, path.with_name(f"{path.stem}.pre-v{latest_version()}.db"))
            log.info("backed up the database to %s before migrating", copy)
        return migrate(conn), copy


async def migrate_with_backup(path: Path) -> tuple[list[int], Path | None]:
    """Bring the schema up to date, first copying a database that has data and needs changes."""
    async with migrating(path):
        return await asyncio.to_thread(_migrate_with_backup, path)


def _opened(path: Path | str) -> sqlite3.Connection:
    conn = connect(path)
    try:
        migrate(conn)
        # Checkpoints are the store's to run, on its thread (`commit`); and the loop never
        # waits for another process's lock (`take_write_lock` waits on the thread instead).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA busy_timeout = 0")
    except BaseException:
        conn.close()
        raise
    return conn


async def open_sqlite(path: Path | str) -> SqliteDatabase:
    async with migrating(path):
        return SqliteDatabase(await asyncio.to_thread(_opened, path), path)


def _fetch_one(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> Row | None:
    cursor = conn.execute(sql, params)
    try:
        row: Row | None = cursor.fetchone()
        return row
    finally:
        cursor.close()


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> list[Row]:
    return conn.execute(sql, params).fetchall()


def _patiently(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    """`work` allowed to wait for another process's lock (or its recovery of the log): only ever
    on the connection's thread."""
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    try:
        return work()
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


class _InlineTx:
    """The statements of a write transaction, run on the event loop: the write lock is held, so
    none of them waits for another connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._conn.executemany(sql, rows)

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        return _fetch_one(self._conn, sql, params)

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return _fetch_all(self._conn, sql, params)

    async def lock(self, key: str) -> None:
        """Every SQLite transaction here is BEGIN IMMEDIATE: it already holds the only write lock."""


class _Reads(_InlineTx):
    """Reads outside a transaction: inline while they are short, on the connection's thread when
    one turns out long (a member's whole history) or the database is busy (another process
    recovering the log)."""

    def __init__(self, db: SqliteDatabase) -> None:
        super().__init__(db.conn)
        self._db = db

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        conn = self._conn
        return await self._read(lambda: _fetch_one(conn, sql, params))

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        conn = self._conn
        return await self._read(lambda: _fetch_all(conn, sql, params))

    async def _read(self, read: Callable[[], T]) -> T:
        conn = self._conn
        steps = 0

        def too_long() -> bool:
            nonlocal steps
            steps += 1
            return steps > READ_STEPS

        conn.set_progress_handler(too_long, STEP_CHECK)
        try:
            return read()
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_BUSY):
                raise
        finally:
            conn.set_progress_handler(None, 0)
        return await self._db.on_thread(lambda: _patiently(conn, read))


class SqliteDatabase(ReadsThrough):
    """One connection shared by the whole process, with transactions that cannot interleave.

    A transaction holds the lock from BEGIN to COMMIT, across the awaits of its body, so no other
    task's write lands inside it (to be rolled back with it) and no other task's read sees its
    uncommitted rows. Work sent to the thread is awaited to its end, even by a cancelled task:
    until it has finished, the connection is not the loop's to use.
    """

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: Path | str) -> None:
        super().__init__()
        self.conn = conn
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self.tx = _InlineTx(conn)
        self._reads = _Reads(self)
        # Held from BEGIN to COMMIT (`_Writing`) and around reads and closing.
        self.lock = asyncio.Lock()
        wal = conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        self._checkpoints = Checkpoints(path) if wal else None

    async def on_thread(self, work: Callable[[], T]) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._thread, work)
        cancelled: asyncio.CancelledError | None = None
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError as error:
                cancelled = error
        if cancelled is not None:
            raise cancelled
        return future.result()

    def _begin(self) -> _Writing:
        return _Writing(self)

    def abandon(self) -> None:
        """Roll back what is open: also after a failed COMMIT (a deferred foreign key), which
        leaves the transaction open, and after a BEGIN that ran on the thread for a cancelled task."""
        if self.conn.in_transaction:
            self.conn.rollback()

    async def take_write_lock(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            # Another process writes: wait for its lock on the thread, never on the loop.
            await self.on_thread(lambda: _patiently(self.conn, lambda: self.conn.execute("BEGIN IMMEDIATE")))

    async def commit(self) -> None:
        checkpoints = self._checkpoints
        if checkpoints is None:
            self.conn.execute("COMMIT")
            return
        if checkpoints.commit_may_sync():
            await self.on_thread(lambda: self.conn.execute("COMMIT"))
        else:
            self.conn.execute("COMMIT")
        await checkpoints.committed(self.on_thread)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Tx]:
        async with self.lock:
            yield self._reads

    async def ping(self) -> bool:
        return await self.fetch_one("SELECT 1") is not None

    async def close(self) -> None:
        """After the transaction under way, if any: closing on the thread while the loop runs one
        of its statements would use the connection from two threads at once."""
        async with self.lock:
            try:
                if self._checkpoints is not None:
                    await self._checkpoints.close()
                await self.on_thread(self.conn.close)
            finally:
                self._thread.shutdown(wait=False)


class _Writing:
    """One write transaction, from taking the process's lock and SQLite's to COMMIT or rollback.
    A plain object rather than a generator: the ledger's hot path opens two per job."""

    __slots__ = ("_db",)

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def __aenter__(self) -> Tx:
        db = self._db
        await db.lock.acquire()
        try:
            await db.take_write_lock()
        except BaseException:
            db.abandon()
            db.lock.release()
            raise
        return db.tx

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        db = self._db
        try:
            if kind is None:
                await db.commit()
            else:
                db.abandon()
        except BaseException:
            db.abandon()
            raise
        finally:
            db.lock.release()


class Checkpoints:
    """Copies the write-ahead log into the database (and fsyncs both) on a connection and thread
    of its own, so that commits on the loop do not wait for the disk.

    Every `CHECKPOINT_EVERY` commits a checkpoint starts beside the writes. While one runs, and
    for the first commit after one copied the whole log, a commit runs on the store's thread: that
    commit may start the log over, which syncs the log's new header. Writes that never pause
    leave every such checkpoint a little behind, and the log would grow for as long as they last:
    so every `WHOLE_EVERY` commits the store waits while the whole log is copied.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._conn: sqlite3.Connection | None = None
        self._running: asyncio.Future[None] | None = None
        self._commits = 0
        self._restart_due = False

    def commit_may_sync(self) -> bool:
        due = self._running is not None or self._restart_due
        self._restart_due = False
        return due

    async def committed(self, on_thread: Callable[[Callable[[], None]], Awaitable[None]]) -> None:
        """Count a commit; the caller still holds the write lock, and `on_thread` is its thread."""
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY:
            return
        if self._commits >= WHOLE_EVERY:
            self._commits = 0
            if self._running is not None:
                await asyncio.wait([self._running])
            await on_thread(self.copy)
        elif self._running is None:
            self._running = asyncio.get_running_loop().run_in_executor(self._thread, self.copy)
            self._running.add_done_callback(self._copied)

    def copy(self) -> None:
        """Checkpoint (PASSIVE: never waits for a lock). A failure is logged, not raised: the
        commits are safe in the log, and the next checkpoint copies them."""
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(str(self._path), check_same_thread=False)
            _, logged, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            log.warning("checkpoint failed; the next one will copy the log", exc_info=True)
            return
        self._restart_due = 0 < logged == copied

    def _copied(self, future: asyncio.Future[None]) -> None:
        self._running = None
        future.result()  # anything but a database error is a bug: let the loop's handler log it

    async def close(self) -> None:
        if self._running is not None:
            await asyncio.wait([self._running])
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown(wait=False)
