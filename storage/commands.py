"""What was last synced to Discord for each command scope (see migration 0007).

Several processes may start at once over one store; the statement that decides who syncs is a
single compare-and-set, so exactly one of them wins.
"""

from __future__ import annotations

from datetime import datetime

from storage.db import Database, ts

_UPSERT = """
    INSERT INTO command_syncs (scope, digest, synced_at) VALUES (?, ?, ?)
    ON CONFLICT (scope) DO UPDATE SET digest = excluded.digest, synced_at = excluded.synced_at
"""


class CommandSyncRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, scope: str, digest: str, *, now: datetime) -> bool:
        """Record `digest` for the scope unless it is already there; True only for the one caller
        that changed it, who must then sync (or `release` the claim if the sync fails)."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                _UPSERT + " WHERE command_syncs.digest <> excluded.digest", (scope, digest, ts(now))
            )
        return changed == 1

    async def record(self, scope: str, digest: str, *, now: datetime) -> None:
        """Record `digest` whatever was there (a forced sync)."""
        async with self._db.transaction() as tx:
            await tx.execute(_UPSERT, (scope, digest, ts(now)))

    async def release(self, scope: str, digest: str) -> None:
        """Give up a claim whose sync failed, so the next start syncs again; a newer claim by
        another process (another digest) is left alone."""
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM command_syncs WHERE scope = ? AND digest = ?", (scope, digest))
