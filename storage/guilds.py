"""A server's own settings: the pause switch and the edit defaults its moderators choose.

The settings document is shared with the credit settings (`storage.quotas`), so each key is
changed by `write_setting`, which reads and rewrites the document while holding the server's
lock: two moderators changing different keys at once both keep their change, on either engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Database, Tx, ts


@dataclass(frozen=True)
class AuditEntry:
    actor_id: int
    action: str
    target_id: int | None
    detail: dict[str, Any]
    created_at: datetime


class GuildRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, guild_id: int) -> tuple[bool, dict[str, Any]]:
        """(paused, settings document); a server never configured is (False, {})."""
        row = await self._db.fetch_one(
            "SELECT paused, settings FROM guild_settings WHERE guild_id = ?", (guild_id,)
        )
        if row is None:
            return False, {}
        return bool(row["paused"]), json.loads(row["settings"])

    async def set_value(self, guild_id: int, key: str, value: Any, *, actor_id: int, now: datetime) -> None:
        """Set one key (any JSON value), or remove it with None."""
        async with self._db.transaction() as tx:
            await write_setting(tx, guild_id, key, value, actor_id=actor_id, now=now)

    async def set_paused(self, guild_id: int, paused: bool, *, actor_id: int, now: datetime) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                """
                INSERT INTO guild_settings (guild_id, paused, updated_by, updated_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (guild_id) DO UPDATE
                SET paused = excluded.paused, updated_by = excluded.updated_by, updated_at = excluded.updated_at
                """,
                (guild_id, int(paused), actor_id, ts(now)),
            )

    async def audit_entries(self, guild_id: int, *, limit: int) -> list[AuditEntry]:
        rows = await self._db.fetch_all(
            "SELECT actor_id, action, target_id, detail, created_at FROM audit_log "
            "WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [
            AuditEntry(
                actor_id=row["actor_id"],
                action=row["action"],
                target_id=row["target_id"],
                detail=json.loads(row["detail"]),
                created_at=datetime.fromisoformat(row["created_at"]),
            )
            for row in rows
        ]


async def write_setting(tx: Tx, guild_id: int, key: str, value: Any, *, actor_id: int, now: datetime) -> None:
    """Set one key of the server's settings document (None removes it), keeping the others."""
    await tx.lock(f"guild_settings:{guild_id}")
    row = await tx.fetch_one("SELECT settings FROM guild_settings WHERE guild_id = ?", (guild_id,))
    document: dict[str, Any] = json.loads(row["settings"]) if row is not None else {}
    if value is None:
        if key not in document:
            return
        document.pop(key)
    else:
        document[key] = value
    await tx.execute(
        """
        INSERT INTO guild_settings (guild_id, settings, updated_by, updated_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (guild_id) DO UPDATE
        SET settings = excluded.settings, updated_by = excluded.updated_by, updated_at = excluded.updated_at
        """,
        (guild_id, json.dumps(document), actor_id, ts(now)),
    )
