"""Raw SQL for tests that set up or tamper with rows directly, on whichever backend is open."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from storage.db import Database


async def run_sql(db: Database, sql: str, params: Sequence[object] = ()) -> None:
    async with db.transaction() as tx:
        await tx.execute(sql, params)


async def run_many(db: Database, sql: str, rows: Iterable[Sequence[object]]) -> None:
    async with db.transaction() as tx:
        await tx.executemany(sql, rows)


async def empty(db: Database) -> None:
    """Remove every row and restart the ids: a PostgreSQL database reused by the next example
    starts as a new one would. (The append-only triggers fire on DELETE, not TRUNCATE.)"""
    if db.dialect != "postgresql":
        return
    rows = await db.fetch_all(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'"
    )
    await run_sql(db, f"TRUNCATE {', '.join(row[0] for row in rows)} RESTART IDENTITY CASCADE")
