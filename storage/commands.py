"""What was last synced to Discord for each command scope (see migration 0007)."""

from __future__ import annotations

from datetime import datetime

from storage.db import Database, ts


class CommandSyncRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def digest(self, scope: str) -> str | None:
        row = await self._db.fetch_one("SELECT digest FROM command_syncs WHERE scope = ?", (scope,))
        return None if row is None else str(row["digest"])

    async def record(self, scope: str, digest: str, *, now: datetime) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                """
                INSERT INTO command_syncs (scope, digest, synced_at) VALUES (?, ?, ?)
                ON CONFLICT (scope) DO UPDATE SET digest = excluded.digest, synced_at = excluded.synced_at
                """,
                (scope, digest, ts(now)),
            )
