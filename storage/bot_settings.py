"""Settings of the whole bot, beside each server's own (`storage.guilds`): the owner's switches.

Kept in the database rather than in a process, so every process sharing it honours them and a
restart does not undo them.
"""

from __future__ import annotations

import json
from datetime import datetime

from storage.db import Database, ts

PAUSED = "paused"


class BotSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def paused(self) -> bool:
        """Whether the owner paused editing on every server."""
        row = await self._db.fetch_one("SELECT value FROM bot_settings WHERE name = ?", (PAUSED,))
        return row is not None and bool(json.loads(row["value"]))

    async def set_paused(self, paused: bool, *, actor_id: int, now: datetime) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                """
                INSERT INTO bot_settings (name, value, updated_by, updated_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (name) DO UPDATE
                SET value = excluded.value, updated_by = excluded.updated_by, updated_at = excluded.updated_at
                """,
                (PAUSED, json.dumps(paused), actor_id, ts(now)),
            )
