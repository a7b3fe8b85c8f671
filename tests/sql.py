"""Raw SQL for tests that set up or tamper with rows directly, on whichever backend is open."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

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


def jobs_plans(path: Path, statements: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Each traced statement that reads `jobs`, with SQLite's plan for it (the detail lines of
    EXPLAIN QUERY PLAN), asked on a connection of its own: for tests that keep a hot query off a
    scan of the whole table."""
    plans = sqlite3.connect(path)
    try:
        return [
            (sql, [row[3] for row in plans.execute(f"EXPLAIN QUERY PLAN {sql}")])
            for sql in statements
            if "jobs" in sql
        ]
    finally:
        plans.close()
