"""Moderator actions on credits: grants, allowances, periods, caps and blocks.

Each one is audited in the same transaction as the change, so the audit log never misses one.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from bot.credits.base import CreditBase
from bot.credits.values import PERIODS
from bot.runtime.config import Period
from storage.db import ts
from storage.ledger import EntryKind, NewEntry
from storage.quotas import PERIOD_KEY, SERVER_CAP_KEY, Scope


class Moderation(CreditBase):
    async def grant(
        self,
        *,
        guild_id: int,
        user_id: int,
        amount: int,
        actor_id: int,
        reason: str,
        expires_at: datetime | None = None,
        key: str | None = None,
    ) -> None:
        """Add bonus credits; `key` (e.g. the interaction id) makes a retried command apply once."""
        if amount <= 0:
            raise ValueError("a grant must be a positive number of credits")
        if expires_at is not None and expires_at <= self._now():
            raise ValueError("a grant cannot expire before it is made")
        await self._admin_entry(EntryKind.GRANT, guild_id, user_id, amount, actor_id, reason, key, expires_at)

    async def revoke(
        self, *, guild_id: int, user_id: int, amount: int, actor_id: int, reason: str, key: str | None = None
    ) -> None:
        """Take bonus credits away; beyond what the member has, this leaves them a debt."""
        if amount <= 0:
            raise ValueError("a revoke must be a positive number of credits")
        await self._admin_entry(EntryKind.REVOKE, guild_id, user_id, -amount, actor_id, reason, key)

    async def adjust(
        self, *, guild_id: int, user_id: int, amount: int, actor_id: int, reason: str, key: str | None = None
    ) -> None:
        """A signed correction to the member's bonus, for fixing mistakes rather than rewarding."""
        if amount == 0:
            raise ValueError("an adjustment of zero changes nothing")
        await self._admin_entry(EntryKind.ADJUST, guild_id, user_id, amount, actor_id, reason, key)

    async def _admin_entry(
        self,
        kind: EntryKind,
        guild_id: int,
        user_id: int,
        amount: int,
        actor_id: int,
        reason: str,
        key: str | None,
        expires_at: datetime | None = None,
    ) -> None:
        now = self._now()
        async with self._db.transaction():
            added = await self._books.admin_entry(
                NewEntry(
                    guild_id=guild_id,
                    user_id=user_id,
                    kind=kind,
                    amount=amount,
                    idempotency_key=f"{kind.value}:{key or uuid.uuid4().hex}",
                    created_at=now,
                    actor_id=actor_id,
                    reason=reason,
                    expires_at=expires_at,
                )
            )
            if added:
                detail: dict[str, object] = {"amount": amount, "reason": reason}
                if expires_at is not None:
                    detail["expires_at"] = ts(expires_at)
                await self._quotas.audit(
                    guild_id, actor_id=actor_id, action=kind.value, target_id=user_id, detail=detail, now=now
                )

    async def set_allowance(
        self, *, guild_id: int, scope: Scope, target_id: int, amount: int | None, actor_id: int
    ) -> None:
        """Set the server default, a role's or a member's allowance per period; None removes it."""
        if amount is not None and amount < 0:
            raise ValueError("an allowance cannot be negative")
        if scope == "default":
            target_id = 0
        now = self._now()
        async with self._db.transaction():
            await self._quotas.set_allowance(guild_id, scope, target_id, amount, actor_id=actor_id, now=now)
            await self._quotas.audit(
                guild_id,
                actor_id=actor_id,
                action="set_allowance",
                target_id=target_id,
                detail={"scope": scope, "amount": amount},
                now=now,
            )

    async def set_period(self, *, guild_id: int, period: Period, actor_id: int) -> None:
        """Change when the server's allowances refill; it applies at once to the current period."""
        if period not in PERIODS:
            raise ValueError(f"unknown credit period {period!r} (expected one of {', '.join(PERIODS)})")
        await self._guild_setting(guild_id, PERIOD_KEY, "period", period, actor_id)

    async def set_server_cap(self, *, guild_id: int, amount: int | None, actor_id: int) -> None:
        """Cap the credits the whole server may spend per period; None lifts the cap."""
        if amount is not None and amount < 0:
            raise ValueError("a server cap cannot be negative")
        await self._guild_setting(guild_id, SERVER_CAP_KEY, "server_cap", amount, actor_id)

    async def _guild_setting(
        self, guild_id: int, key: str, name: str, value: str | int | None, actor_id: int
    ) -> None:
        now = self._now()
        async with self._db.transaction():
            await self._quotas.set_guild_credit(guild_id, key, value, actor_id=actor_id, now=now)
            await self._quotas.audit(
                guild_id,
                actor_id=actor_id,
                action=f"set_{name}",
                target_id=None,
                detail={name: value},
                now=now,
            )

    async def block(self, *, guild_id: int, user_id: int, actor_id: int, reason: str) -> None:
        """Stop the member editing on this server; blocking again changes (and audits) nothing."""
        now = self._now()
        async with self._db.transaction():
            if await self._quotas.block(guild_id, user_id, actor_id=actor_id, reason=reason, now=now):
                await self._quotas.audit(
                    guild_id,
                    actor_id=actor_id,
                    action="block",
                    target_id=user_id,
                    detail={"reason": reason},
                    now=now,
                )

    async def unblock(self, *, guild_id: int, user_id: int, actor_id: int) -> None:
        now = self._now()
        async with self._db.transaction():
            if await self._quotas.unblock(guild_id, user_id):
                await self._quotas.audit(
                    guild_id, actor_id=actor_id, action="unblock", target_id=user_id, detail={}, now=now
                )

    async def is_blocked(self, guild_id: int, user_id: int) -> bool:
        return await self._quotas.is_blocked(guild_id, user_id)
