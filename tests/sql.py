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
