"""Every row of one store into another (SQLite → PostgreSQL, or back), for `python -m bot copy-db`.

Both stores are migrated to the same version before this runs, so their tables and columns are
the same (tests/unit/test_postgres.py keeps the two migration series from drifting). Tables are
found in the source, not listed here, so a table a later migration adds is copied too; they are
written parents first (by their foreign keys), each in primary-key order, so a job comes before
the jobs built on it. The whole copy is one transaction on the target: it lands entirely or not
at all.
"""

from __future__ import annotations

from graphlib import TopologicalSorter

from storage.db import Database, Tx

BATCH = 1000
_INTERNAL = ("schema_version",)


class TargetNotEmpty(Exception):
    """The target already holds data; copying into it would mix two installs."""


async def tables(db: Database) -> list[str]:
    """The store's tables, each after the tables its foreign keys point at."""
    if db.dialect == "sqlite":
        names = [
            row[0]
            for row in await db.fetch_all(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        edges = [
            (name, row["table"])
            for name in names
            for row in await db.fetch_all("SELECT * FROM pragma_foreign_key_list(?)", (name,))
        ]
    else:
        names = [
            row[0]
            for row in await db.fetch_all("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        edges = [
            (row[0], row[1])
            for row in await db.fetch_all(
                """
                SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c
                JOIN pg_namespace n ON n.oid = c.connamespace
                WHERE c.contype = 'f' AND n.nspname = 'public'
                """
            )
        ]
    graph: dict[str, set[str]] = {name: set() for name in names if name not in _INTERNAL}
    for child, parent in edges:
        if child in graph and parent != child:
            graph[child].add(parent)
    return list(TopologicalSorter(graph).static_order())


async def count(db: Database, table: str) -> int:
    row = await db.fetch_one(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 (names come from the catalog)
    assert row is not None
    return int(row[0])


async def copy_rows(source: Database, target: Database) -> dict[str, int]:
    """Copy every table; returns the rows copied per table. Raises TargetNotEmpty first if the
    target has any row in any table."""
    order = await tables(source)
    missing = set(order) - set(await tables(target))
    if missing:
        raise RuntimeError(f"the target has no table {', '.join(sorted(missing))}: migrate it first")
    filled = [table for table in order if await count(target, table)]
    if filled:
        raise TargetNotEmpty(f"the target already has rows in {', '.join(filled)}")
    copied: dict[str, int] = {}
    async with target.transaction() as tx:
        for table in order:
            copied[table] = await _copy_table(source, tx, table)
        if target.dialect == "postgresql":
            await _restart_identities(tx)
    return copied


async def _copy_table(source: Database, tx: Tx, table: str) -> int:
    done = 0
    while True:
        rows = await source.fetch_all(
            f"SELECT * FROM {table} ORDER BY 1, 2 LIMIT ? OFFSET ?",  # noqa: S608
            (BATCH, done),
        )
        if not rows:
            return done
        columns = list(rows[0].keys())
        marks = ", ".join("?" for _ in columns)
        await tx.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608
            [tuple(row[column] for column in columns) for row in rows],
        )
        done += len(rows)


async def _restart_identities(tx: Tx) -> None:
    """Rows came with their ids; the next id PostgreSQL hands out must follow the largest."""
    for row in await tx.fetch_all(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND is_identity = 'YES'"
    ):
        table, column = row[0], row[1]
        await tx.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"  # noqa: S608
            f" COALESCE(MAX({column}), 0) + 1, false) FROM {table}"
        )


async def ledger_members(db: Database) -> list[tuple[int, int]]:
    """Every (server, member) with a ledger entry: whose balances the copy must keep."""
    rows = await db.fetch_all("SELECT DISTINCT guild_id, user_id FROM ledger ORDER BY guild_id, user_id")
    return [(int(row[0]), int(row[1])) for row in rows]
