"""What every repository sees of the database, whichever engine holds it.

Repositories write one SQL dialect: `?` placeholders, `ON CONFLICT ... DO NOTHING/UPDATE`,
`RETURNING`, `IS NOT DISTINCT FROM`, `CASE` rather than boolean arithmetic, `CAST(? AS BIGINT)`
where only a parameter says what type it is (`CAST(? AS BIGINT) IS NULL`: PostgreSQL must know
every parameter's type), and no engine functions (JSON documents are read and written whole, in
Python). SQLite runs it as written; the PostgreSQL backend numbers the placeholders. Times are fixed-width ISO-8601 UTC text (`ts`),
so comparing the strings compares the instants on both engines.

A transaction opened inside another one in the same task joins it, so a service can make a job
row and its credit reservation one unit by wrapping both calls. Reads outside a transaction see
only committed rows.
"""

from __future__ import annotations

import contextvars
import re
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit


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


class StoreUnavailable(Exception):
    """The store cannot be reached or opened; the message says what to fix, in one sentence."""


def redacted(url: str) -> str:
    """A connection URL as it may be printed or logged: its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def database_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the database failed" (rather than "the code is wrong"), for
    callers that leave work for recovery when the store is unavailable."""
    import asyncpg

    return (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError, StoreUnavailable)


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path


_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations(directory: Path, *, contiguous: bool = True) -> list[Migration]:
    """The migration files in order; duplicates, and gaps in a series that records only its
    latest version (SQLite's user_version), are a packaging bug, so they raise."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise RuntimeError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path))
    if len({migration.version for migration in found}) != len(found):
        raise RuntimeError(f"two migrations in {directory.name} share a number")
    for expected, migration in enumerate(found if contiguous else [], start=1):
        if migration.version != expected:
            raise RuntimeError(
                f"migration {migration.path.name} is out of sequence (expected {expected:04d})"
            )
    return found


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

    def enter(self, tx: Tx) -> contextvars.Token[Tx | None]:
        return self._current.set(tx)

    def leave(self, token: contextvars.Token[Tx | None]) -> None:
        self._current.reset(token)


class _Joined:
    """The caller's own transaction, entered again: a plain object rather than a generator, as a
    reservation enters a dozen of them (one per repository call)."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    async def __aenter__(self) -> Tx:
        return self._tx

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Owned:
    """A task's own transaction: `begin` entered, and made the task's current one while it is
    open. A plain object rather than a generator: the ledger's hot path opens two per job."""

    __slots__ = ("_begin", "_joining", "_token")

    def __init__(self, begin: AbstractAsyncContextManager[Tx], joining: Joining) -> None:
        self._begin = begin
        self._joining = joining
        self._token: contextvars.Token[Tx | None] | None = None

    async def __aenter__(self) -> Tx:
        tx = await self._begin.__aenter__()
        self._token = self._joining.enter(tx)
        return tx

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool | None:
        if self._token is not None:
            self._joining.leave(self._token)
        return await self._begin.__aexit__(kind, error, trace)


class ReadsThrough:
    """What both backends share: a transaction or a read in a task that already has a
    transaction goes through it; otherwise a transaction comes from `_begin()` (entered as the
    task's own) and a read from `_read()` (SQLite's shared connection, a pooled one)."""

    def __init__(self) -> None:
        self._joining = Joining()

    def _begin(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    def _read(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        current = self._joining.current()
        return _Owned(self._begin(), self._joining) if current is None else _Joined(current)

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        current = self._joining.current()
        if current is not None:
            return await current.fetch_one(sql, params)
        async with self._read() as tx:
            return await tx.fetch_one(sql, params)

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        current = self._joining.current()
        if current is not None:
            return await current.fetch_all(sql, params)
        async with self._read() as tx:
            return await tx.fetch_all(sql, params)
