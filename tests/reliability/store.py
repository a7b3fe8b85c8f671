"""The bot's store seen from the test process, on either backend, never through the bot.

A store is the SQLite file's path or the PostgreSQL URL the bot was given
(`tests.postgres.bot_store_url`). Reads are synchronous, as the judge's checks are; on
PostgreSQL each runs on its own connection in a worker thread, so it works from inside the
test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")
Store = Path | str


def _in_thread(work: Callable[[], Awaitable[T]]) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work()).result()  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    """SUM over BIGINT is NUMERIC in PostgreSQL; the judge compares ints, as SQLite gives them."""
    return int(value) if isinstance(value, Decimal) else value


def read_rows(store: Store, sql: str) -> list[dict[str, Any]] | None:
    """The rows of one read-only query; None while the store or its schema does not exist yet."""
    if isinstance(store, Path):
        return _read_sqlite(store, sql)

    async def query() -> list[dict[str, Any]] | None:
        conn = await asyncpg.connect(store, timeout=10)
        try:
            async with conn.transaction(readonly=True):
                rows = await conn.fetch(sql)
        except asyncpg.UndefinedTableError:
            return None  # the schema is still being created
        finally:
            await conn.close()
        return [{key: _plain(value) for key, value in row.items()} for row in rows]

    return _in_thread(query)


def _read_sqlite(path: Path, sql: str) -> list[dict[str, Any]] | None:
    if not path.exists():
        return None
    try:
        # Read-only: the judge can never change what it checks.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return None
    conn.row_factory = sqlite3.Row
    with contextlib.closing(conn):
        try:
            return [dict(row) for row in conn.execute(sql).fetchall()]
        except sqlite3.OperationalError:
            return None  # the schema is still being created


def exists(store: Store) -> bool:
    return store.exists() if isinstance(store, Path) else True


# Every table the bot writes; on PostgreSQL the freeze locks them all against writes.
_TABLES = "jobs, job_outputs, job_messages, ledger, credit_holds, guild_settings, paint_links"


class DbFreeze:
    """Stops the bot at its very next write, from the test.

    SQLite: holds the write lock (BEGIN IMMEDIATE); the bot's busy timeout is 5 s, far longer
    than the kill that follows. PostgreSQL: holds EXCLUSIVE locks on the bot's tables, which
    let reads through and make every write wait. Either way this positions a kill between two
    writes that no fake request separates (e.g. after Discord stored a result and before the
    ledger captures it). `engage()` is synchronous so a fake's hook can call it before it answers.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engaged = asyncio.Event()
        self._conn: sqlite3.Connection | None = None
        self._holder: threading.Thread | None = None
        self._release = threading.Event()

    def engage(self, *_: object) -> None:
        if self._conn is not None or self._holder is not None:
            return
        if isinstance(self.store, Path):
            conn = sqlite3.connect(self.store, timeout=10, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            self._conn = conn
        else:
            locked = threading.Event()
            self._holder = threading.Thread(target=asyncio.run, args=(self._hold(self.store, locked),))
            self._holder.start()
            if not locked.wait(10):
                raise RuntimeError("could not lock the bot's tables within 10 s")
        self.engaged.set()

    async def _hold(self, url: str, locked: threading.Event) -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {_TABLES} IN EXCLUSIVE MODE")
                locked.set()
                await asyncio.to_thread(self._release.wait)
        finally:
            await conn.close()

    def thaw(self) -> None:
        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
            self._conn = None
        if self._holder is not None:
            self._release.set()
            self._holder.join(10)
            self._holder = None
