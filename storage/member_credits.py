"""Everything a reservation decides from, in one read: a reservation is the ledger's hot path.

Whether the job already holds credits, whether the member is blocked, the server's period and
cap, the allowances that can apply to the member, and their kept balance (`storage.balances`)
are one statement of scalar subqueries instead of five, each a round trip on PostgreSQL and,
on SQLite, the larger part of a reservation's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from storage.balances import LOT_BONUS, Standing, standing_from_row
from storage.db import Database, ts
from storage.quotas import GuildCredits, guild_credits_from


@dataclass(frozen=True)
class MemberAllowances:
    """The allowance rows that can apply to one member; None where the server set none."""

    user: int | None
    best_role: int | None
    default: int | None


@dataclass(frozen=True)
class MemberCredits:
    held: bool
    """The job asked about already holds credits (a reservation made before)."""
    blocked: bool
    settings: GuildCredits
    allowances: MemberAllowances
    standing: Standing


class MemberCreditsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def read(
        self, guild_id: int, user_id: int, role_ids: Sequence[int], at: datetime, *, job_id: int | None = None
    ) -> MemberCredits:
        # `IN ()` is SQLite's alone: a member without roles gets no role allowance instead.
        marks = ", ".join("?" for _ in role_ids)
        roles = f"guild_id = ? AND scope = 'role' AND target_id IN ({marks})"
        best_role = f"(SELECT MAX(amount) FROM allowances WHERE {roles})" if role_ids else "NULL"  # noqa: S608
        row = await self._db.fetch_one(
            f"""
            SELECT
                EXISTS (SELECT 1 FROM credit_holds WHERE job_id = ?) AS held,
                EXISTS (SELECT 1 FROM member_blocks WHERE guild_id = ? AND user_id = ?) AS blocked,
                (SELECT settings FROM guild_settings WHERE guild_id = ?) AS settings,
                (SELECT amount FROM allowances WHERE guild_id = ? AND scope = 'user' AND target_id = ?)
                    AS user_allowance,
                {best_role} AS role_allowance,
                (SELECT amount FROM allowances WHERE guild_id = ? AND scope = 'default') AS default_allowance,
                b.*, {LOT_BONUS} AS lot_bonus
            FROM (SELECT 1 AS one) AS member
            LEFT JOIN member_balances b ON b.guild_id = ? AND b.user_id = ?
            """,  # noqa: S608
            (
                job_id,
                guild_id,
                user_id,
                guild_id,
                guild_id,
                user_id,
                *((guild_id, *role_ids) if role_ids else ()),
                guild_id,
                ts(at),
                guild_id,
                user_id,
            ),
        )
        assert row is not None  # one row always: the join is outer
        return MemberCredits(
            held=bool(row["held"]),
            blocked=bool(row["blocked"]),
            settings=guild_credits_from(row["settings"]),
            allowances=MemberAllowances(
                row["user_allowance"], row["role_allowance"], row["default_allowance"]
            ),
            standing=Standing() if row["guild_id"] is None else standing_from_row(row),
        )
