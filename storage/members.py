"""What each member chose for themselves (for now, whether results mention them)."""

from __future__ import annotations

from datetime import datetime

from storage.db import Database, ts


class MemberPrefs:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def mentions(self, user_id: int) -> bool:
        """Whether a finished edit's message mentions this member; yes unless they said no."""
        row = await self._db.fetch_one("SELECT mention FROM member_prefs WHERE user_id = ?", (user_id,))
        return row is None or bool(row["mention"])

    async def set_mentions(self, user_id: int, mention: bool, *, now: datetime) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                """
                INSERT INTO member_prefs (user_id, mention, updated_at) VALUES (?, ?, ?)
                ON CONFLICT (user_id) DO UPDATE
                SET mention = excluded.mention, updated_at = excluded.updated_at
                """,
                (user_id, int(mention), ts(now)),
            )
