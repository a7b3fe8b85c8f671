"""What every repository sees of the database, whichever engine holds it.

Repositories write one SQL dialect: `?` placeholders, `ON CONFLICT ... DO NOTHING/UPDATE`,
`RETURNING`, `IS NOT DISTINCT FROM`, `CASE` rather than boolean arithmetic, and no engine
functions (JSON documents are read and written whole, in Python). SQLite runs it as written;
the PostgreSQL backend numbers the placeholders. Times are fixed-width ISO-8601 UTC text (`ts`),
so comparing the strings compares the instants on both engines.

A transaction opened inside another one in the same task joins it, so a service can make a job
row and its credit reservation one unit by wrapping both calls. Reads outside a transaction see
only committed rows.
"""

from __future__ import annotations

import contextvars
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol


class Row(Protocol):
    """A result row, by column name or position (sqlite3.Row and asyncpg.Record both are)."""

    def __getitem__(self, key: str | int, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


class Tx(Protocol):
    """Statements inside one open transaction."""

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a statement; returns how many rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    async def lock(self, key: str) -> None:
        """Hold `key` until this transaction ends, so transactions deciding from the same rows (a
        member's in-flight count, a balance) take turns across processes. SQLite's single writer
        already serialises every transaction, so there it costs nothing."""
        ...


class Database(Protocol):
    """One store for the whole process (and, on PostgreSQL, shared with other processes)."""

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql', for the few statements the engines cannot share."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    async def ping(self) -> bool:
        """Whether a trivial query answers (the health check)."""
        ...

    async def close(self) -> None: ...


class SchemaTooNew(Exception):
    """The database was written by a newer Retouch; running old code on it could corrupt it."""

    def __init__(self, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"the database is at schema version {found}, but this version of Retouch knows only "
            f"up to {known}: upgrade Retouch, or restore a backup made by this version"
        )


def database_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the database failed" (rather than "the code is wrong"), for
    callers that leave work for recovery when the store is unavailable."""
    return (sqlite3.Error,)


def ts(value: datetime) -> str:
    """Fixed-width UTC text, so comparing the strings in SQL compares the instants."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class Joining:
    """The rule both backends share: a transaction opened in a task that already has one joins
    it, and a read in such a task reads through it (it must see its own uncommitted writes)."""

    def __init__(self) -> None:
        self._current: contextvars.ContextVar[Tx | None] = contextvars.ContextVar("tx", default=None)

    def current(self) -> Tx | None:
        return self._current.get()

    @asynccontextmanager
    async def entered(self, tx: Tx) -> AsyncIterator[Tx]:
        token = self._current.set(tx)
        try:
            yield tx
        finally:
            self._current.reset(token)
