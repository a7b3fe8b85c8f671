"""Prices, reservations, allowances and caps: what an edit costs and whether a member may make it.

Sign convention. An entry's `amount` is the change it makes to what the member can spend:
grant +, revoke −, adjust ±, reserve −R (credits put on hold for a job), release +(R − C) (the
part of the hold that was not used comes back). capture −C records the charge for the images
delivered; it moves nothing, because those credits already left at reserve, so sums of
spendable credits skip it. For every settled job reserve + release = capture = −(price per image
× images delivered): a job counts as its reserve while open and as its capture once settled,
so a failed or cancelled one (a full release, no capture) costs nothing.

Consumption. A member has a period allowance and a bonus. A reservation takes what is left of
the current period's allowance first and bonus only for the rest; that split is stored with the
hold (`storage.ledger.Hold`) because allowances and roles change. Settling charges the
allowance part first, so what comes back is bonus first. Bonus is a set of lots: each grant with
an expiry is a lot of its own, everything else (grants without expiry, adjustments, revokes) is
one permanent lot; bonus is spent soonest-expiring first and a lot's credits vanish at its
expiry. Credits coming back from a hold return to the period or lot they came from, so if that
has lapsed meanwhile they lapse too, as they would have unspent. Only an admin's revoke or adjust
can push the permanent lot below zero: a debt that lowers what the member can spend until a
grant covers it. So: available = max(0, allowance − allowance used this period) + bonus, where a
period's allowance use is what jobs reserved in it hold (open) or were charged (settled) from
the allowance, and the allowance is resolved on every call from the roles passed in (user
override, else the best matching role, else the server default, else the config default).

Caps are checked in the reservation's transaction, which holds the database's write lock, so
concurrent reservations are serialized and can never overshoot a cap together.
"""

from __future__ import annotations

import csv
import io
import itertools
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from bot.config import BudgetSettings, CreditsSettings, Period
from storage.db import Database, ts
from storage.ledger import EntryKind, Hold, LedgerEntry, LedgerRepository, NewEntry, UsageRow
from storage.quotas import PERIOD_KEY, SERVER_CAP_KEY, Allowances, QuotaRepository, Scope

__all__ = [
    "Balance",
    "BudgetExceeded",
    "CreditError",
    "CreditService",
    "Estimate",
    "InsufficientCredits",
    "LedgerEntry",
    "MemberBlocked",
    "QuotaView",
    "Spend",
    "UsageRow",
    "period_bounds",
]

PERIODS: tuple[Period, ...] = ("day", "week", "month", "none")
MICROS_PER_USD = 1_000_000
# Direct messages have no server; their credits live under this guild id.
DM_GUILD = 0
CSV_COLUMNS = (
    "id",
    "created_at",
    "guild_id",
    "user_id",
    "kind",
    "amount",
    "job_id",
    "actor_id",
    "reason",
    "expires_at",
    "idempotency_key",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """[start, next reset) of the period holding `now`; (None, None) for an allowance that never resets."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    if period == "month":
        first = day.replace(day=1)
        if first.month == 12:
            return first, first.replace(year=first.year + 1, month=1)
        return first, first.replace(month=first.month + 1)
    if period == "none":
        return None, None
    raise ValueError(f"unknown credit period {period!r} (expected one of {', '.join(PERIODS)})")


@dataclass(frozen=True)
class Estimate:
    """What an edit will cost: credits from the member, micro-dollars from the owner.

    Both are a whole price per image times `images`, so a partial delivery is charged exactly.
    """

    credits: int
    usd_micros: int
    images: int = 1

    def __post_init__(self) -> None:
        if self.images < 1 or self.credits < 0 or self.usd_micros < 0:
            raise ValueError("an estimate needs at least one image and no negative cost")
        if self.credits % self.images or self.usd_micros % self.images:
            raise ValueError("an estimate's credits and USD must be a whole price per image")

    @property
    def credits_per_image(self) -> int:
        return self.credits // self.images


@dataclass(frozen=True)
class Balance:
    available: int
    reserved: int
    allowance: int
    allowance_used: int
    bonus: int
    period: str
    refills_at: datetime | None


@dataclass(frozen=True)
class Spend:
    """The owner's money, counting open reservations as spent: across all servers (with the
    owner's caps), or in one server (`guild_id`), which is what that server's admins may see."""

    day_usd_micros: int
    month_usd_micros: int
    day_cap_micros: int | None
    month_cap_micros: int | None
    day_resets_at: datetime
    month_resets_at: datetime
    guild_id: int | None = None


@dataclass(frozen=True)
class QuotaView:
    """A server's credit settings as moderators see them, config defaults filled in."""

    period: str
    default_allowance: int
    server_cap: int | None
    roles: Mapping[int, int] = field(default_factory=dict)
    users: Mapping[int, int] = field(default_factory=dict)


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


class CreditError(Exception):
    """Why an edit was refused; `message` is one sentence fit to show the member."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InsufficientCredits(CreditError):
    def __init__(self, needed: int, available: int, refills_at: datetime | None) -> None:
        self.needed = needed
        self.available = available
        self.refills_at = refills_at
        refill = f"; your allowance refills at {_when(refills_at)}" if refills_at else ""
        super().__init__(f"This edit costs {needed} credits but you have {available}{refill}.")


class MemberBlocked(CreditError):
    def __init__(self) -> None:
        super().__init__("A moderator has blocked you from editing images here.")


class BudgetExceeded(CreditError):
    def __init__(self, scope: Literal["server", "day", "month"], resets_at: datetime | None) -> None:
        self.scope = scope
        self.resets_at = resets_at
        until = f"until {_when(resets_at)}" if resets_at else "until a moderator raises its cap"
        if scope == "server":
            text = (
                f"This server has used all the credits it may spend this period, so edits are paused {until}."
            )
        else:
            span = "today" if scope == "day" else "this month"
            text = f"The bot has reached its owner's spending limit for {span}, so edits are paused {until}."
        super().__init__(text)


@dataclass
class _Lot:
    expires_at: datetime
    remaining: int = 0


@dataclass
class _Job:
    reserved: int
    from_allowance: int
    reserved_at: datetime
    # Where the bonus part of the hold came from, in the order it was taken; None = permanent lot.
    taken: list[tuple[_Lot | None, int]]
    charged: int | None = None


class _Wallet:
    """One member's credits rebuilt from their ledger, entry by entry, by the module's rules."""

    def __init__(self, entries: Sequence[LedgerEntry], holds: Mapping[int, Hold]) -> None:
        self.permanent = 0
        self.lots: list[_Lot] = []
        self.jobs: dict[int, _Job] = {}
        self.problems: list[str] = []
        captured = {e.job_id: -e.amount for e in entries if e.kind is EntryKind.CAPTURE}
        for entry in entries:
            self._apply(entry, holds, captured)

    def _apply(
        self, entry: LedgerEntry, holds: Mapping[int, Hold], captured: Mapping[int | None, int]
    ) -> None:
        if entry.kind is EntryKind.GRANT and entry.expires_at is not None:
            self.lots.append(_Lot(entry.expires_at, entry.amount))
        elif entry.kind in (EntryKind.GRANT, EntryKind.REVOKE, EntryKind.ADJUST):
            if entry.amount >= 0:
                self.permanent += entry.amount
            else:
                self._take(-entry.amount, entry.created_at)
        elif entry.job_id is None:
            return  # a job entry without a job moves nothing; verify() reports it
        elif entry.kind is EntryKind.RESERVE:
            self._reserve(entry, entry.job_id, holds.get(entry.job_id))
        else:
            job = self.jobs.get(entry.job_id)
            if job is None:
                self.problems.append(f"job {entry.job_id}: {entry.kind} without a reserve before it")
            elif job.charged is None:
                job.charged = captured.get(entry.job_id, 0)
                self._give_back(job)

    def _reserve(self, entry: LedgerEntry, job_id: int, hold: Hold | None) -> None:
        reserved = -entry.amount
        if hold is None:
            self.problems.append(f"job {job_id}: reserve without a hold row")
        from_allowance = reserved if hold is None else hold.from_allowance
        from_bonus = reserved - from_allowance
        available = self.bonus(entry.created_at)
        if from_bonus > 0 and from_bonus > available:
            self.problems.append(
                f"job {job_id}: held {from_bonus} bonus credits when {available} were available"
            )
        self.jobs[job_id] = _Job(
            reserved, from_allowance, entry.created_at, self._take(from_bonus, entry.created_at)
        )

    def _take(self, amount: int, at: datetime) -> list[tuple[_Lot | None, int]]:
        taken: list[tuple[_Lot | None, int]] = []
        for lot in sorted(self.lots, key=lambda lot: lot.expires_at):
            if amount == 0:
                break
            if lot.remaining > 0 and lot.expires_at > at:
                use = min(lot.remaining, amount)
                lot.remaining -= use
                amount -= use
                taken.append((lot, use))
        if amount:
            self.permanent -= amount
            taken.append((None, amount))
        return taken

    def _give_back(self, job: _Job) -> None:
        kept = max(0, (job.charged or 0) - job.from_allowance)
        for lot, used in job.taken:
            charged = min(used, kept)
            kept -= charged
            if lot is None:
                self.permanent += used - charged
            else:
                lot.remaining += used - charged

    def bonus(self, at: datetime) -> int:
        return self.permanent + sum(lot.remaining for lot in self.lots if lot.expires_at > at)

    def reserved(self) -> int:
        return sum(job.reserved for job in self.jobs.values() if job.charged is None)

    def allowance_used(self, since: datetime | None) -> int:
        return sum(
            job.from_allowance if job.charged is None else min(job.charged, job.from_allowance)
            for job in self.jobs.values()
            if since is None or job.reserved_at >= since
        )


@dataclass(frozen=True)
class _Member:
    balance: Balance
    period_start: datetime | None
    server_cap: int | None


class CreditService:
    def __init__(
        self,
        db: Database,
        credits: CreditsSettings,
        budget: BudgetSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._credits = credits
        self._budget = budget
        self._clock = clock
        self._ledger = LedgerRepository(db)
        self._quotas = QuotaRepository(db)

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

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
        usd_micros = round(usd_per_image[quality] * MICROS_PER_USD) * multiplier
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
            member = await self._member(guild_id, user_id, role_ids, self._now())
        return member.balance

    async def _member(self, guild_id: int, user_id: int, role_ids: Sequence[int], now: datetime) -> _Member:
        settings = await self._quotas.guild_credits(guild_id)
        period = settings.period or self._credits.period
        start, refills_at = period_bounds(period, now)
        allowance = self._resolve(
            await self._quotas.member_allowances(guild_id, user_id, role_ids), guild_id, user_id, role_ids
        )
        wallet = _Wallet(*await self._ledger.member_ledger(guild_id, user_id))
        used = wallet.allowance_used(start)
        bonus = wallet.bonus(now)
        balance = Balance(
            available=max(0, allowance - used) + bonus,
            reserved=wallet.reserved(),
            allowance=allowance,
            allowance_used=used,
            bonus=bonus,
            period=period,
            refills_at=refills_at,
        )
        return _Member(balance, start, settings.server_cap)

    def _resolve(self, rows: Allowances, guild_id: int, user_id: int, role_ids: Sequence[int]) -> int:
        if user_id in rows.users:
            return rows.users[user_id]
        matched = [rows.roles[role] for role in role_ids if role in rows.roles]
        if matched:
            return max(matched)
        return self._default_allowance(rows, guild_id)

    def _default_allowance(self, rows: Allowances, guild_id: int) -> int:
        if rows.default is not None:
            return rows.default
        return self._credits.dm_allowance if guild_id == DM_GUILD else self._credits.default_allowance

    async def reserve(
        self, *, guild_id: int, user_id: int, role_ids: Sequence[int], job_id: int, estimate: Estimate
    ) -> None:
        """Hold the estimate for a job, or raise the CreditError that explains why not.

        Joins the caller's transaction, so the job row and its hold commit or vanish together.
        A second call for the same job returns without checking anything: the first one won.
        """
        async with self._db.transaction():
            if await self._ledger.hold(job_id) is not None:
                return
            now = self._now()
            if await self._quotas.is_blocked(guild_id, user_id):
                raise MemberBlocked
            member = await self._member(guild_id, user_id, role_ids, now)
            balance = member.balance
            if estimate.credits > balance.available:
                raise InsufficientCredits(estimate.credits, balance.available, balance.refills_at)
            if member.server_cap is not None:
                committed = await self._ledger.committed_credits(guild_id, member.period_start)
                if committed + estimate.credits > member.server_cap:
                    raise BudgetExceeded("server", balance.refills_at)
            await self._check_owner_budget(estimate.usd_micros, now)
            from_allowance = min(estimate.credits, max(0, balance.allowance - balance.allowance_used))
            await self._ledger.append(
                NewEntry(
                    guild_id=guild_id,
                    user_id=user_id,
                    kind=EntryKind.RESERVE,
                    amount=-estimate.credits,
                    idempotency_key=f"job:{job_id}:reserve",
                    created_at=now,
                    job_id=job_id,
                    reason=f"{estimate.images} image(s) at {estimate.credits_per_image} each",
                )
            )
            await self._ledger.add_hold(Hold(job_id, estimate.images, from_allowance, estimate.usd_micros))
            await self._ledger.record_reservation(
                job_id, credits=estimate.credits, usd_micros=estimate.usd_micros
            )

    async def _check_owner_budget(self, usd_micros: int, now: datetime) -> None:
        scopes: tuple[tuple[Literal["day", "month"], float | None], ...] = (
            ("day", self._budget.usd_per_day),
            ("month", self._budget.usd_per_month),
        )
        caps = [(scope, limit, *_budget_window(scope, now)) for scope, limit in scopes if limit is not None]
        spent = await self._ledger.committed_usd(*(start for _, _, start, _ in caps))
        for (scope, limit, _, resets_at), used in zip(caps, spent, strict=True):
            if used + usd_micros > _micros(limit):
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
            entries = await self._ledger.job_entries(job_id)
            reserve = next((e for e in entries if e.kind is EntryKind.RESERVE), None)
            if reserve is None:
                return 0
            if any(e.kind in (EntryKind.CAPTURE, EntryKind.RELEASE) for e in entries):
                return sum(-e.amount for e in entries if e.kind is EntryKind.CAPTURE)
            hold = await self._ledger.hold(job_id)
            if hold is None:
                raise RuntimeError(f"job {job_id} has a reserve entry but no hold; run verify()")
            reserved = -reserve.amount
            charged = min(reserved, reserved // hold.images * delivered_images)
            now = self._now()
            detail = f"delivered {delivered_images} of {hold.images} image(s)"
            if delivered_images > 0:
                await self._job_entry(reserve, EntryKind.CAPTURE, -charged, detail, now)
            if reserved > charged or delivered_images == 0:
                await self._job_entry(reserve, EntryKind.RELEASE, reserved - charged, detail, now)
            if usd_micros is None:
                usd_micros = hold.usd_micros // hold.images * delivered_images
            await self._ledger.record_settlement(job_id, credits=charged, usd_micros=usd_micros)
        return charged

    async def release(self, job_id: int, *, reason: str) -> None:
        """Give the whole hold back (failed, cancelled, crashed); nothing if already settled."""
        async with self._db.transaction():
            entries = await self._ledger.job_entries(job_id)
            reserve = next((e for e in entries if e.kind is EntryKind.RESERVE), None)
            if reserve is None or any(e.kind in (EntryKind.CAPTURE, EntryKind.RELEASE) for e in entries):
                return
            await self._job_entry(reserve, EntryKind.RELEASE, -reserve.amount, reason, self._now())

    async def _job_entry(
        self, reserve: LedgerEntry, kind: EntryKind, amount: int, reason: str, now: datetime
    ) -> None:
        await self._ledger.append(
            NewEntry(
                guild_id=reserve.guild_id,
                user_id=reserve.user_id,
                kind=kind,
                amount=amount,
                idempotency_key=f"job:{reserve.job_id}:{kind.value}",
                created_at=now,
                job_id=reserve.job_id,
                reason=reason,
            )
        )

    # Moderator changes: each one is audited in the same transaction.

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
            added = await self._ledger.append(
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

    # Reports

    async def quota(self, guild_id: int) -> QuotaView:
        async with self._db.transaction():
            settings = await self._quotas.guild_credits(guild_id)
            rows = await self._quotas.allowances(guild_id)
        return QuotaView(
            period=settings.period or self._credits.period,
            default_allowance=self._default_allowance(rows, guild_id),
            server_cap=settings.server_cap,
            roles=rows.roles,
            users=rows.users,
        )

    async def history(
        self, guild_id: int, user_id: int, *, limit: int = 10, offset: int = 0
    ) -> list[LedgerEntry]:
        """The member's entries, newest first."""
        return await self._ledger.history(guild_id, user_id, limit=limit, offset=offset)

    async def usage(self, guild_id: int, *, since: datetime) -> list[UsageRow]:
        """Per member, the jobs settled since `since`: credits charged, edits delivered, owner USD."""
        return await self._ledger.usage(guild_id, since)

    async def spend(self, guild_id: int | None = None) -> Spend:
        """Spend in every server against the owner's caps, or in one server (no caps: they are
        the owner's, across servers)."""
        now = self._now()
        day_start, day_end = _budget_window("day", now)
        month_start, month_end = _budget_window("month", now)
        day, month = await self._ledger.committed_usd(day_start, month_start, guild_id=guild_id)
        everywhere = guild_id is None
        day_cap, month_cap = self._budget.usd_per_day, self._budget.usd_per_month
        return Spend(
            day_usd_micros=day,
            month_usd_micros=month,
            day_cap_micros=_micros(day_cap) if everywhere and day_cap is not None else None,
            month_cap_micros=_micros(month_cap) if everywhere and month_cap is not None else None,
            day_resets_at=day_end,
            month_resets_at=month_end,
            guild_id=guild_id,
        )

    async def export_csv(self, guild_id: int) -> str:
        """The server's whole ledger as RFC 4180 CSV (CRLF line ends, a header row)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for e in await self._ledger.guild_entries(guild_id):
            writer.writerow(
                [
                    e.id,
                    ts(e.created_at),
                    e.guild_id,
                    e.user_id,
                    e.kind.value,
                    e.amount,
                    _blank(e.job_id),
                    _blank(e.actor_id),
                    _inert(e.reason or ""),
                    "" if e.expires_at is None else ts(e.expires_at),
                    e.idempotency_key,
                ]
            )
        return out.getvalue()

    async def verify(self) -> list[str]:
        """Every broken invariant found by replaying the whole ledger; empty means healthy."""
        async with self._db.transaction():
            entries = await self._ledger.all_entries()
            holds = await self._ledger.all_holds()
        problems: list[str] = []
        for (guild_id, user_id), group in itertools.groupby(entries, key=lambda e: (e.guild_id, e.user_id)):
            problems += [f"member {user_id} in {guild_id}: {p}" for p in _Wallet(list(group), holds).problems]
        by_job: defaultdict[int, list[LedgerEntry]] = defaultdict(list)
        for entry in entries:
            problems += _entry_problems(entry)
            if entry.job_id is not None:
                by_job[entry.job_id].append(entry)
        for job_id, job_entries in by_job.items():
            problems += _job_problems(job_id, job_entries, holds.get(job_id))
        problems += [
            f"job {job_id}: a hold without a reserve entry" for job_id in holds.keys() - by_job.keys()
        ]
        return problems


_SIGNS: dict[EntryKind, Callable[[int], bool]] = {
    EntryKind.GRANT: lambda amount: amount > 0,
    EntryKind.REVOKE: lambda amount: amount < 0,
    EntryKind.ADJUST: lambda amount: amount != 0,
    EntryKind.RESERVE: lambda amount: amount <= 0,
    EntryKind.CAPTURE: lambda amount: amount <= 0,
    EntryKind.RELEASE: lambda amount: amount >= 0,
}
_JOB_KINDS = (EntryKind.RESERVE, EntryKind.CAPTURE, EntryKind.RELEASE)


def _entry_problems(entry: LedgerEntry) -> list[str]:
    problems = []
    if not _SIGNS[entry.kind](entry.amount):
        problems.append(f"entry {entry.id}: {entry.kind} of {entry.amount} has the wrong sign")
    if (entry.job_id is not None) != (entry.kind in _JOB_KINDS):
        problems.append(f"entry {entry.id}: {entry.kind} {'with' if entry.job_id else 'without'} a job")
    if entry.expires_at is not None and entry.kind is not EntryKind.GRANT:
        problems.append(f"entry {entry.id}: only grants expire, not a {entry.kind}")
    return problems


def _job_problems(job_id: int, entries: Sequence[LedgerEntry], hold: Hold | None) -> list[str]:
    problems = []
    counts = {kind: sum(1 for e in entries if e.kind is kind) for kind in _JOB_KINDS}
    if counts[EntryKind.RESERVE] != 1 or counts[EntryKind.CAPTURE] > 1 or counts[EntryKind.RELEASE] > 1:
        problems.append(f"job {job_id}: entries {dict(counts)} are not one reserve settled at most once")
    if len({(e.guild_id, e.user_id) for e in entries}) > 1:
        problems.append(f"job {job_id}: entries for more than one member")
    amounts = {kind: sum(e.amount for e in entries if e.kind is kind) for kind in _JOB_KINDS}
    reserved, captured, released = (amounts[kind] for kind in _JOB_KINDS)
    if (counts[EntryKind.CAPTURE] or counts[EntryKind.RELEASE]) and reserved + released != captured:
        problems.append(f"job {job_id}: reserve {reserved} + release {released} != capture {captured}")
    if hold is not None:
        per_image, rest = divmod(-reserved, hold.images)
        if rest or not 0 <= hold.from_allowance <= -reserved:
            problems.append(f"job {job_id}: hold {hold} does not fit its reserve of {-reserved}")
        elif per_image and captured % per_image:
            problems.append(f"job {job_id}: capture {captured} is not a whole number of images")
    return problems


def _micros(usd: float) -> int:
    return round(usd * MICROS_PER_USD)


def _budget_window(scope: Literal["day", "month"], now: datetime) -> tuple[datetime, datetime]:
    start, end = period_bounds(scope, now)
    assert start is not None and end is not None
    return start, end


def _blank(value: int | None) -> int | str:
    return "" if value is None else value


def _inert(text: str) -> str:
    """Keep a spreadsheet from running a moderator's reason as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
