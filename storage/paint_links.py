"""The painter's links: one row per Paint press, claimed once by the page's submit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Database, ts


@dataclass(frozen=True)
class PaintLinkRow:
    id: str
    user_id: int
    guild_id: int | None
    channel_id: int
    grant: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    job_id: int | None
    refusal: str | None


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class PaintLinkRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(
        self,
        link_id: str,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        grant: dict[str, Any],
        created_at: datetime,
        expires_at: datetime,
    ) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO paint_links (id, user_id, guild_id, channel_id, grant_data, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (link_id, user_id, guild_id, channel_id, json.dumps(grant), ts(created_at), ts(expires_at)),
            )

    async def get(self, link_id: str) -> PaintLinkRow | None:
        row = await self._db.fetch_one("SELECT * FROM paint_links WHERE id = ?", (link_id,))
        if row is None:
            return None
        return PaintLinkRow(
            id=row["id"],
            user_id=row["user_id"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            grant=json.loads(row["grant_data"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            expires_at=datetime.fromisoformat(row["expires_at"]),
            used_at=_when(row["used_at"]),
            job_id=row["job_id"],
            refusal=row["refusal"],
        )

    async def prune(self, expired_before: datetime) -> int:
        """Forget links that expired before this instant; returns how many."""
        async with self._db.transaction() as tx:
            return await tx.execute("DELETE FROM paint_links WHERE expires_at < ?", (ts(expired_before),))

    async def claim(self, link_id: str, now: datetime) -> bool:
        """Mark the link used; False when it already was (or has expired), so two submits racing
        each other, or one after a restart, cannot both go through."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE paint_links SET used_at = ? WHERE id = ? AND used_at IS NULL AND expires_at > ?",
                (ts(now), link_id, ts(now)),
            )
            return changed == 1

    async def settle(self, link_id: str, *, job_id: int | None, refusal: str | None) -> None:
        """What the claimed link's submit led to, for the page's status."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE paint_links SET job_id = ?, refusal = ? WHERE id = ?", (job_id, refusal, link_id)
            )
