"""The credit service: prices, balances, and the hold an edit puts on credits until it settles.

Caps are checked in the reservation's transaction, under locks on the member, the server (when
it has a cap) and the owner's budget (when one is set): on SQLite the write lock already
serialises them, on PostgreSQL these locks do, across processes, so concurrent reservations can
never overshoot a cap together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.credits.books import used_in
from bot.credits.moderation import Moderation
from bot.credits.reports import Reports
from bot.credits.values import (
    Balance,
    BudgetExceeded,
    ConfirmFirst,
    Estimate,
    InsufficientCredits,
    MemberBlocked,
    budget_window,
    micros,
    period_bounds,
)
from storage.db import Tx
from storage.ledger import EntryKind, Hold, LedgerEntry, NewEntry
from storage.member_credits import MemberAllowances, MemberCredits


@dataclass(frozen=True)
class _Member:
    balance: Balance
    period_start: datetime | None
    server_cap: int | None


class CreditService(Moderation, Reports):
    """What an edit costs and whether a member may make it; moderators' and reports' calls too."""

    # Prices

    def estimate(
        self, *, quality: str, resolution: str, count: int, usd_per_image: Mapping[str, float]
    ) -> Estimate:
        if count < 1:
            raise ValueError("an edit makes at least one image")
        if quality not in self._credits.prices or quality not in usd_per_image:
            raise ValueError(f"no price is configured for quality {quality!r}")
        if resolution not in self._credits.resolution_multiplier:
            raise ValueError(f"no price multiplier is configured for resolution {resolution!r}")
        multiplier = self._credits.resolution_multiplier[resolution]
        credits = self._credits.prices[quality] * multiplier
        usd_micros = micros(usd_per_image[quality]) * multiplier
        return Estimate(credits * count, usd_micros * count, count)

    def price_table(self) -> dict[str, dict[str, int]]:
        """Credits per image by quality, then resolution, for showing members what edits cost."""
        return {
            quality: {res: price * mult for res, mult in self._credits.resolution_multiplier.items()}
            for quality, price in self._credits.prices.items()
        }

    # Balances and reservations

    async def balance(self, guild_id: int, user_id: int, role_ids: Sequence[int] = ()) -> Balance:
        async with self._db.transaction():
            await self._books.lock(guild_id, user_id)
            now = self._now()
            state = await self._member_credits.read(guild_id, user_id, role_ids, now)
            member = await self._member(guild_id, user_id, state, now)
        return member.balance

    async def _member(self, guild_id: int, user_id: int, state: MemberCredits, now: datetime) -> _Member:
        period = state.settings.period or self._credits.period
        start, refills_at = period_bounds(period, now)
        allowance = self._resolve(state.allowances, guild_id)
        standing = await self._books.current(guild_id, user_id, state.standing, now)
        used = used_in(standing, period, now)
        bonus = standing.permanent + standing.lot_bonus
        balance = Balance(
            available=max(0, allowance - used) + bonus,
            reserved=standing.reserved,
            allowance=allowance,
            allowance_used=used,
            bonus=bonus,
            period=period,
            refills_at=refills_at,
        )
        return _Member(balance, start, state.settings.server_cap)

    def _resolve(self, rows: MemberAllowances, guild_id: int) -> int:
        """The member's own override, else their best role's, else the server's default."""
        if rows.user is not None:
            return rows.user
        if rows.best_role is not None:
            return rows.best_role
        return self._default_allowance(rows.default, guild_id)

    async def reserve(
        self,
        *,
        guild_id: int,
        user_id: int,
        role_ids: Sequence[int],
        job_id: int,
        estimate: Estimate,
        ask_first: Callable[[Balance], bool] | None = None,
    ) -> None:
        """Hold the estimate for a job, or raise the CreditError that explains why not.

        Joins the caller's transaction, so the job row and its hold commit or vanish together.
        A second call for the same job returns without checking anything: the first one won.
        `ask_first`: whether, with this balance, the member must confirm first (ConfirmFirst),
        decided once the member may make the edit and before the caps are counted, as the
        member is asked before the server's and the owner's caps are looked at.
        """
        async with self._db.transaction() as tx:
            # What is decided below comes from rows read here (the balance, the caps' sums):
            # concurrent reservations for the same member (the books' lock), server or owner
            # budget take turns.
            await self._books.lock(guild_id, user_id)
            now = self._now()
            state = await self._member_credits.read(guild_id, user_id, role_ids, now, job_id=job_id)
            if state.held:
                return
            if state.blocked:
                raise MemberBlocked
            member = await self._member(guild_id, user_id, state, now)
            balance = member.balance
            if estimate.credits > balance.available:
                raise InsufficientCredits(estimate.credits, balance.available, balance.refills_at)
            if ask_first is not None and ask_first(balance):
                raise ConfirmFirst(balance)
            if member.server_cap is not None:
                await tx.lock(f"credits:server:{guild_id}")
                committed = await self._ledger.committed_credits(guild_id, member.period_start)
                if committed + estimate.credits > member.server_cap:
                    raise BudgetExceeded("server", balance.refills_at)
            await self._check_owner_budget(tx, estimate.usd_micros, now)
            from_allowance = min(estimate.credits, max(0, balance.allowance - balance.allowance_used))
            await self._books.reserve(
                NewEntry(
                    guild_id=guild_id,
                    user_id=user_id,
                    kind=EntryKind.RESERVE,
                    amount=-estimate.credits,
                    idempotency_key=f"job:{job_id}:reserve",
                    created_at=now,
                    job_id=job_id,
                    reason=f"{estimate.images} image(s) at {estimate.credits_per_image} each",
                ),
                Hold(job_id, estimate.images, from_allowance, estimate.usd_micros),
            )

    async def _check_owner_budget(self, tx: Tx, usd_micros: int, now: datetime) -> None:
        scopes: tuple[tuple[Literal["day", "month"], float | None], ...] = (
            ("day", self._budget.usd_per_day),
            ("month", self._budget.usd_per_month),
        )
        caps = [(scope, limit, *budget_window(scope, now)) for scope, limit in scopes if limit is not None]
        if caps:
            await tx.lock("credits:owner-budget")
        spent = await self._ledger.committed_usd(*(start for _, _, start, _ in caps))
        for (scope, limit, _, resets_at), used in zip(caps, spent, strict=True):
            if used + usd_micros > micros(limit):
                raise BudgetExceeded(scope, resets_at)

    async def settle(self, job_id: int, *, delivered_images: int, usd_micros: int | None = None) -> int:
        """Charge for what was delivered, give back the rest; returns the credits charged.

        `usd_micros` is what the host reported the job cost; without it, the reserved USD per
        image times the images delivered. A job already settled or released is left alone and
        its charge returned; a job that never reserved anything was free.
        """
        if delivered_images < 0 or (usd_micros is not None and usd_micros < 0):
            raise ValueError("delivered images and USD cannot be negative")
        async with self._db.transaction():
            entries, hold = await self._ledger.job_books(job_id)
            reserve = next((e for e in entries if e.kind is EntryKind.RESERVE), None)
            if reserve is None:
                return 0
            if any(e.kind in (EntryKind.CAPTURE, EntryKind.RELEASE) for e in entries):
                return _charged(entries)
            if hold is None:
                raise RuntimeError(f"job {job_id} has a reserve entry but no hold; run verify()")
            reserved = -reserve.amount
            charged = min(reserved, reserved // hold.images * delivered_images)
            now = self._now()
            detail = f"delivered {delivered_images} of {hold.images} image(s)"
            settlement = []
            if delivered_images > 0:
                settlement.append(_job_entry(reserve, EntryKind.CAPTURE, -charged, detail, now))
            if reserved > charged or delivered_images == 0:
                settlement.append(_job_entry(reserve, EntryKind.RELEASE, reserved - charged, detail, now))
            if not await self._books.settle(reserve, hold, charged, settlement):
                return _charged(await self._ledger.job_entries(job_id))
            if usd_micros is None:
                usd_micros = hold.usd_micros // hold.images * delivered_images
            await self._ledger.record_settlement(job_id, credits=charged, usd_micros=usd_micros)
        return charged

    async def release(self, job_id: int, *, reason: str) -> None:
        """Give the whole hold back (failed, cancelled, crashed); nothing if already settled."""
        async with self._db.transaction():
            entries, hold = await self._ledger.job_books(job_id)
            reserve = next((e for e in entries if e.kind is EntryKind.RESERVE), None)
            if reserve is None or any(e.kind in (EntryKind.CAPTURE, EntryKind.RELEASE) for e in entries):
                return
            if hold is None:
                raise RuntimeError(f"job {job_id} has a reserve entry but no hold; run verify()")
            entry = _job_entry(reserve, EntryKind.RELEASE, -reserve.amount, reason, self._now())
            await self._books.settle(reserve, hold, 0, [entry])


def _charged(entries: Sequence[LedgerEntry]) -> int:
    return sum(-e.amount for e in entries if e.kind is EntryKind.CAPTURE)


def _job_entry(reserve: LedgerEntry, kind: EntryKind, amount: int, reason: str, now: datetime) -> NewEntry:
    return NewEntry(
        guild_id=reserve.guild_id,
        user_id=reserve.user_id,
        kind=kind,
        amount=amount,
        idempotency_key=f"job:{reserve.job_id}:{kind.value}",
        created_at=now,
        job_id=reserve.job_id,
        reason=reason,
    )
