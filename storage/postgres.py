"""The shared store: PostgreSQL through an asyncpg pool, for installs that outgrow one SQLite file.

asyncpg speaks PostgreSQL's binary protocol straight from asyncio (no thread, no DB-API layer),
prepares and caches each statement per connection, and has the pool and LISTEN/NOTIFY the
several-process mode needs. Repositories write `?` placeholders; they are numbered (`$1`...)
here, once per SQL string.

Transactions are READ COMMITTED. Where code decides from rows it read (a member's in-flight
count, a balance), it takes `Tx.lock(key)`, a transaction-scoped advisory lock, so two
processes deciding from the same rows take turns. Reads outside a transaction take any pooled
connection and see only committed rows.

Migrations are numbered files in `migrations/postgresql/`, each applied in its own
transaction and recorded in `schema_version` (so one numbered below one already applied is
still applied); the runner holds an advisory lock meanwhile, so
processes starting together migrate once.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage.db import ReadsThrough, Row, SchemaTooNew, StoreUnavailable, Tx, migrations, redacted

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations") / "postgresql"
POOL_SIZE = 10
# Connections kept apart from the transactions' pool, for `PostgresDatabase.execute_apart`:
# its one user (the intake journal) sends one statement at a time.
APART_SIZE = 1
CONNECT_TIMEOUT = 10.0
# Any fixed number: the advisory lock every migrating process waits on.
_MIGRATION_LOCK = 0x5265746F756368  # "Retouch"

_Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)


def latest_version() -> int:
    return max(migration.version for migration in migrations(MIGRATIONS_DIR, contiguous=False))


@lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """`?` placeholders as `$1..$n`, leaving string literals, quoted names and comments alone."""
    out: list[str] = []
    count = 0
    i, end = 0, len(sql)
    while i < end:
        char = sql[i]
        if char in ("'", '"'):
            close = sql.find(char, i + 1)
            while close != -1 and sql[close + 1 : close + 2] == char:  # a doubled quote inside
                close = sql.find(char, close + 2)
            stop = end if close == -1 else close + 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            stop = end if newline == -1 else newline
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            stop = end if close == -1 else close + 2
        elif char == "?":
            count += 1
            out.append(f"${count}")
            i += 1
            continue
        else:
            stop = i + 1
        out.append(sql[i:stop])
        i = stop
    return "".join(out)


def _changed(status: str) -> int:
    """Rows a statement changed, from its command tag ("UPDATE 3", "INSERT 0 1")."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


def _numeric(text: str) -> int | float:
    """SUM over BIGINT is NUMERIC in PostgreSQL; read it as SQLite gives it, an int."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


async def _prepare(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.set_type_codec("numeric", encoder=str, decoder=_numeric, schema="pg_catalog", format="text")


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """What a connection needs before the pool hands it out again: nothing more than asyncpg
    already does (it rolls back a transaction left open). The default reset adds `SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`, a round trip on every
    release, for session state this store never leaves behind: its locks are
    transaction-scoped (the migration's session lock is released in a `finally`, and a
    connection that fails there is closed), it opens no cursors, sets nothing, and listens
    on a connection of its own (`storage/notices.py`)."""


class _PostgresTx:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return _changed(await self._conn.execute(numbered(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._conn.executemany(numbered(sql), [tuple(row) for row in rows])

    async def fetch_one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        return await self._conn.fetchrow(numbered(sql), *params)

    async def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return list(await self._conn.fetch(numbered(sql), *params))

    async def lock(self, key: str) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)


class PostgresDatabase(ReadsThrough):
    """A pool shared by the process; each transaction holds one connection until it ends.
    `url` is kept for the one connection that lives outside the pool (`storage.notices`)."""

    dialect = "postgresql"

    def __init__(
        self, pool: asyncpg.Pool[asyncpg.Record], apart: asyncpg.Pool[asyncpg.Record], url: str
    ) -> None:
        super().__init__()
        self.pool = pool
        self._apart = apart
        self.url = url

    async def execute_apart(self, sql: str, params: Sequence[object] = ()) -> int:
        """One statement, committed on its own, on a connection no transaction ever holds.

        For a write that must not queue behind the transactions (the intake journal's insert,
        before Discord's 3 seconds run out): under a burst every pooled connection can be held
        by a transaction waiting on a lock, and a statement asking the pool waits with them.
        Returns how many rows it changed."""
        async with self._apart.acquire() as conn:
            return _changed(await conn.execute(numbered(sql), *params))

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[Tx]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield _PostgresTx(conn)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Tx]:
        async with self.pool.acquire() as conn:
            yield _PostgresTx(conn)

    async def ping(self) -> bool:
        try:
            return await self.fetch_one("SELECT 1") is not None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False

    async def close(self) -> None:
        await self._apart.close()
        await self.pool.close()


async def applied_versions(conn: _Connection) -> set[int]:
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return set()
    return {int(row[0]) for row in await conn.fetch("SELECT version FROM schema_version")}


async def schema_version(conn: _Connection) -> int:
    return max(await applied_versions(conn), default=0)


async def migrate(conn: _Connection) -> list[int]:
    """Apply every migration the database has not had; returns the versions applied.

    schema_version records each version applied, so a migration numbered below one already
    applied (two branches' migrations landing in either order) is still applied, once.
    """
    known = migrations(MIGRATIONS_DIR, contiguous=False)
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        done = await applied_versions(conn)
        newest = max((migration.version for migration in known), default=0)
        if max(done, default=0) > newest:
            raise SchemaTooNew(max(done), newest)
        applied = []
        for migration in known:
            if migration.version in done:
                continue
            log.info("applying migration %s", migration.path.name)
            async with conn.transaction():
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version"
                    " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                await conn.execute(migration.path.read_text(encoding="utf-8"))
                await conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    migration.version,
                    datetime.now(UTC).isoformat(timespec="microseconds"),
                )
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


def _unavailable(url: str, exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        reason = "that database does not exist (create it, or fix storage.url)"
    elif isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        reason = "it refused the user or password in storage.url"
    elif isinstance(exc, OSError | TimeoutError):
        reason = (
            "nothing answered there (is PostgreSQL running, and are the host and port in storage.url right?)"
        )
    else:
        reason = f"{exc} (check storage.url)"
    return StoreUnavailable(f"Cannot open the PostgreSQL database at {redacted(url)}: {reason}.")


async def _pool(url: str, size: int) -> asyncpg.Pool[asyncpg.Record]:
    try:
        return await asyncpg.create_pool(
            url, min_size=1, max_size=size, init=_prepare, reset=_keep_session, timeout=CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _unavailable(url, exc) from exc


async def open_postgres(url: str, *, pool_size: int = POOL_SIZE) -> PostgresDatabase:
    pool = await _pool(url, pool_size)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        apart = await _pool(url, APART_SIZE)
    except BaseException:
        await pool.close()
        raise
    return PostgresDatabase(pool, apart, url)


async def migrate_url(url: str) -> tuple[list[int], int]:
    """`python -m bot migrate`: (versions applied, the version now)."""
    pool = await _pool(url, 1)
    try:
        async with pool.acquire() as conn:
            return await migrate(conn), await schema_version(conn)
    finally:
        await pool.close()


def dump(url: str, destination: Path) -> Path:
    """A consistent copy with pg_dump (custom format, for pg_restore); a directory gets a
    timestamped file in it."""
    program = shutil.which("pg_dump")
    if program is None:
        raise StoreUnavailable(
            "pg_dump is not installed here: back up PostgreSQL with pg_dump (or your provider's backups)."
        )
    if destination.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        destination = destination / f"retouch-{stamp}.dump"
    destination.parent.mkdir(parents=True, exist_ok=True)
    # The password goes in the environment, not the command line other users can list.
    parts = urlsplit(url)
    environment = dict(os.environ)
    if parts.password is not None:
        environment["PGPASSWORD"] = parts.password
        url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}@{parts.netloc.rpartition('@')[2]}"))
    done = subprocess.run(  # noqa: S603 (the program is pg_dump, found on PATH)
        [program, "--format=custom", f"--file={destination}", f"--dbname={url}"],
        env=environment,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise StoreUnavailable(f"pg_dump failed: {message[-1] if message else 'no reason given'}.")
    return destination
