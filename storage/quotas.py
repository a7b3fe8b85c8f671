"""What moderators set: allowances, a server's credit period and cap, blocks, and the audit trail.

These rows are current settings, not history, so they are updated in place; the history of who
changed what lives in `audit_log`, which `audit` appends to inside the same transaction as the
change. The period and the cap live in `guild_settings.settings` (JSON) beside keys other parts
of the bot own, so they are changed one key at a time (`storage.guilds.write_setting`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from storage.db import Database, ts
from storage.guilds import write_setting

Scope = Literal["default", "role", "user"]

PERIOD_KEY = "credit_period"
SERVER_CAP_KEY = "credit_server_cap"


@dataclass(frozen=True)
class Allowances:
    """A server's allowance rows; `default` is None when the server never set one."""

    default: int | None = None
    roles: Mapping[int, int] = field(default_factory=dict)
    users: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GuildCredits:
    period: str | None
    server_cap: int | None


def guild_credits_from(settings: str | None) -> GuildCredits:
    """This module's keys of a server's settings document (None: the server has none)."""
    if settings is None:
        return GuildCredits(None, None)
    document = json.loads(settings)
    return GuildCredits(document.get(PERIOD_KEY), document.get(SERVER_CAP_KEY))


class QuotaRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def allowances(self, guild_id: int) -> Allowances:
        """Every row the server has, for moderators reviewing its settings (a reservation reads only
        the member's, in `storage.member_credits`)."""
        rows = await self._db.fetch_all(
            "SELECT scope, target_id, amount FROM allowances WHERE guild_id = ?", (guild_id,)
        )
        default: int | None = None
        roles: dict[int, int] = {}
        users: dict[int, int] = {}
        for row in rows:
            if row["scope"] == "default":
                default = row["amount"]
            elif row["scope"] == "role":
                roles[row["target_id"]] = row["amount"]
            else:
                users[row["target_id"]] = row["amount"]
        return Allowances(default, roles, users)

    async def set_allowance(
        self, guild_id: int, scope: Scope, target_id: int, amount: int | None, *, actor_id: int, now: datetime
    ) -> None:
        async with self._db.transaction() as tx:
            if amount is None:
                await tx.execute(
                    "DELETE FROM allowances WHERE guild_id = ? AND scope = ? AND target_id = ?",
                    (guild_id, scope, target_id),
                )
            else:
                await tx.execute(
                    """
                    INSERT INTO allowances (guild_id, scope, target_id, amount, updated_by, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (guild_id, scope, target_id) DO UPDATE
                    SET amount = excluded.amount, updated_by = excluded.updated_by,
                        updated_at = excluded.updated_at
                    """,
                    (guild_id, scope, target_id, amount, actor_id, ts(now)),
                )

    async def guild_credits(self, guild_id: int) -> GuildCredits:
        row = await self._db.fetch_one("SELECT settings FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return guild_credits_from(None if row is None else row["settings"])

    async def set_guild_credit(
        self, guild_id: int, key: str, value: str | int | None, *, actor_id: int, now: datetime
    ) -> None:
        """Set (or with None, remove) one of this module's keys in the server's settings document."""
        async with self._db.transaction() as tx:
            await write_setting(tx, guild_id, key, value, actor_id=actor_id, now=now)

    async def block(self, guild_id: int, user_id: int, *, actor_id: int, reason: str, now: datetime) -> bool:
        """False when the member was already blocked (the first block's reason stays)."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                """
                INSERT INTO member_blocks (guild_id, user_id, actor_id, reason, created_at)
                VALUES (?, ?, ?, ?, ?) ON CONFLICT (guild_id, user_id) DO NOTHING
                """,
                (guild_id, user_id, actor_id, reason, ts(now)),
            )
            return changed == 1

    async def unblock(self, guild_id: int, user_id: int) -> bool:
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "DELETE FROM member_blocks WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
            return changed == 1

    async def is_blocked(self, guild_id: int, user_id: int) -> bool:
        row = await self._db.fetch_one(
            "SELECT 1 FROM member_blocks WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return row is not None

    async def audit(
        self,
        guild_id: int,
        *,
        actor_id: int,
        action: str,
        target_id: int | None,
        detail: Mapping[str, Any],
        now: datetime,
    ) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO audit_log (guild_id, actor_id, action, target_id, detail, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (guild_id, actor_id, action, target_id, json.dumps(dict(detail), sort_keys=True), ts(now)),
            )
