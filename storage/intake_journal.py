"""The intake journal as a table, for processes sharing PostgreSQL: edits acknowledged to Discord
whose job is not written yet (bot/jobs/journal.py says how they are used).

Each row is held under a lease like a job's: the process that wrote it renews it with its job
leases, and once it lapses any process may take the row over (compare-and-set on the lease it
read) and write its job. The transaction that writes the job deletes the row, so of two
processes writing a job for one row, the second finds the row gone and rolls back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from storage.db import ts
from storage.postgres import PostgresDatabase


@dataclass(frozen=True)
class JournalRow:
    interaction_token: str
    owner: str
    lease_until: datetime
    edit_order: str


class IntakeJournalRepository:
    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def add(self, rows: Sequence[JournalRow], created_at: datetime) -> None:
        """One statement and one commit for them all, on a connection of its own, so it never
        waits for the transactions' pool. A token already there (an interaction journaled
        twice) keeps its first row."""
        await self._db.execute_apart(
            "INSERT INTO intake_journal (interaction_token, owner, lease_until, created_at, edit_order)"
            " SELECT token, owner, lease_until, ?, edit_order"
            " FROM unnest(CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[]))"
            " AS batch (token, owner, lease_until, edit_order)"
            " ON CONFLICT (interaction_token) DO NOTHING",
            (
                ts(created_at),
                [row.interaction_token for row in rows],
                [row.owner for row in rows],
                [ts(row.lease_until) for row in rows],
                [row.edit_order for row in rows],
            ),
        )

    async def withdraw(self, interaction_token: str, owner: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "DELETE FROM intake_journal WHERE interaction_token = ? AND owner = ?",
                (interaction_token, owner),
            )

    async def settle(self, interaction_token: str) -> bool:
        """Delete the row, in the caller's transaction (the one writing its job); False when it
        was gone. The row stays locked until that transaction ends, so a second writer waits for
        it and then finds it gone."""
        async with self._db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM intake_journal WHERE interaction_token = ?", (interaction_token,)
            )
        return deleted > 0

    async def renew(self, owner: str, until: datetime) -> int:
        async with self._db.transaction() as tx:
            return await tx.execute(
                "UPDATE intake_journal SET lease_until = ? WHERE owner = ?", (ts(until), owner)
            )

    async def since(self, created_after: datetime) -> list[JournalRow]:
        rows = await self._db.fetch_all(
            "SELECT interaction_token, owner, lease_until, edit_order FROM intake_journal"
            " WHERE created_at >= ? ORDER BY created_at",
            (ts(created_after),),
        )
        return [
            JournalRow(
                row["interaction_token"],
                row["owner"],
                datetime.fromisoformat(row["lease_until"]),
                row["edit_order"],
            )
            for row in rows
        ]

    async def take_over(self, row: JournalRow, owner: str, until: datetime) -> bool:
        """Hold the row from the lease it had when read (compare-and-set): False when its holder
        renewed it, another process took it first, or its job was written meanwhile."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE intake_journal SET owner = ?, lease_until = ?"
                " WHERE interaction_token = ? AND owner = ? AND lease_until = ?",
                (owner, ts(until), row.interaction_token, row.owner, ts(row.lease_until)),
            )
        return changed > 0

    async def forget_older(self, created_before: datetime) -> int:
        async with self._db.transaction() as tx:
            return await tx.execute("DELETE FROM intake_journal WHERE created_at < ?", (ts(created_before),))
