"""The ledger and the balances kept beside it, written together: the one door for credit entries.

Each entry is appended under its member's lock, and in the same transaction its effect goes to
the member's row (`storage.balances`) by the very code the wallet replays (`Bonus`,
`allowance_part`, `bonus_kept`). So a balance is one read however long the member's history is,
two processes cannot both spend the same credits, and `replayed` rebuilds from the ledger what
the row should say, for verify-ledger and for members whose row predates the kept balances.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from types import MappingProxyType

from bot.credits.values import period_bounds
from bot.credits.wallet import Bonus, Wallet, allowance_part, bonus_kept
from storage.balances import (
    PERIOD_COLUMNS,
    BalanceRepository,
    BonusLot,
    Change,
    PeriodUse,
    Sources,
    Standing,
)
from storage.db import Database, ts
from storage.ledger import EntryKind, Hold, LedgerEntry, LedgerRepository, NewEntry


def period_starts(at: datetime) -> Mapping[str, datetime]:
    """The start of the day, week and month holding `at`: the periods a reservation counts in."""
    return _starts_on(at.astimezone(UTC).date())


@functools.lru_cache(maxsize=8)
def _starts_on(day: date) -> Mapping[str, datetime]:
    """Remembered (and read-only): every entry of a day counts in the same periods."""
    at = datetime(day.year, day.month, day.day, tzinfo=UTC)
    starts = {}
    for period in PERIOD_COLUMNS:
        start, _ = period_bounds(period, at)
        assert start is not None
        starts[period] = start
    return MappingProxyType(starts)


def used_in(standing: Standing, period: str, now: datetime) -> int:
    """Allowance used in the `period` (day, week, month or none) holding `now`."""
    if period == "none":
        return standing.all_used
    start, _ = period_bounds(period, now)
    use = standing.periods.get(period)
    return use.used if use is not None and start is not None and use.starts == ts(start) else 0


def replayed(wallet: Wallet, now: datetime) -> Standing:
    """What a member's row should hold at `now`, from their replayed ledger."""
    return Standing(
        permanent=wallet.purse.permanent,
        reserved=wallet.reserved(),
        periods={
            p: PeriodUse(ts(start), wallet.allowance_used(start)) for p, start in period_starts(now).items()
        },
        all_used=wallet.allowance_used(None),
        lot_bonus=wallet.purse.total(now) - wallet.purse.permanent,
    )


class Books:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._ledger = LedgerRepository(db)
        self._balances = BalanceRepository(db)

    async def lock(self, guild_id: int, user_id: int) -> None:
        await self._balances.lock_member(guild_id, user_id)

    async def current(self, guild_id: int, user_id: int, standing: Standing, now: datetime) -> Standing:
        """The member's row as read (`storage.member_credits`), or, for a row made by the migration,
        rebuilt from the ledger first; call it holding their lock in the transaction that read it."""
        if not standing.stale:
            return standing
        wallet = Wallet(*await self._ledger.member_ledger(guild_id, user_id))
        fresh = replayed(wallet, now)
        sources = {job_id: job.taken if job.charged is None else [] for job_id, job in wallet.jobs.items()}
        await self._balances.fill(guild_id, user_id, fresh, wallet.purse.lots, sources)
        return fresh

    async def admin_entry(self, entry: NewEntry) -> bool:
        """A grant, revoke or adjustment; False when its key was already used."""
        async with self._db.transaction():
            await self.lock(entry.guild_id, entry.user_id)
            entry_id = await self._ledger.append(entry)
            if entry_id is None:
                return False
            change = Change(permanent=entry.amount)
            if entry.kind is EntryKind.GRANT and entry.expires_at is not None:
                await self._balances.add_lot(
                    entry.guild_id, entry.user_id, BonusLot(entry_id, entry.expires_at, entry.amount)
                )
                change = Change()
            elif entry.amount < 0:
                permanent, _ = await self._take(entry, -entry.amount)
                change = Change(permanent=permanent)
            await self._balances.apply(entry.guild_id, entry.user_id, change)
            return True

    async def _take(self, entry: NewEntry, amount: int) -> tuple[int, Sources]:
        """Spend `amount` bonus for the entry, soonest-expiring lot first; returns the permanent
        lot's change and what was taken from where."""
        bonus = Bonus(0, await self._balances.live_lots(entry.guild_id, entry.user_id, entry.created_at))
        taken = bonus.take(amount, entry.created_at)
        await self._balances.save_lots(lot for lot, _ in taken if lot is not None)
        return bonus.permanent, taken

    async def reserve(self, entry: NewEntry, hold: Hold) -> None:
        """Append a job's reserve entry with its hold; the caller holds the member's lock and has
        checked the balance. A job reserved already is left as it is."""
        if await self._ledger.append(entry) is None:
            return
        await self._ledger.add_hold(hold)
        from_bonus = -entry.amount - hold.from_allowance
        permanent = 0
        if from_bonus > 0:
            permanent, taken = await self._take(entry, from_bonus)
            await self._balances.add_sources(hold.job_id, taken)
        change = Change(permanent, -entry.amount, hold.from_allowance, period_starts(entry.created_at))
        await self._balances.apply(entry.guild_id, entry.user_id, change)

    async def settle(
        self, reserve: LedgerEntry, hold: Hold, charged: int, entries: Sequence[NewEntry]
    ) -> bool:
        """Append a job's capture and/or release, giving back what the hold took beyond the
        charge; False when another transaction settled the job first (nothing changed)."""
        async with self._db.transaction():
            await self.lock(reserve.guild_id, reserve.user_id)
            for n, entry in enumerate(entries):
                if await self._ledger.append(entry) is None:
                    if n:  # two different settlements of one job at once: keep neither
                        raise RuntimeError(f"job {hold.job_id} was settled differently at the same time")
                    return False
            reserved = -reserve.amount
            bonus = Bonus()
            if reserved > hold.from_allowance:
                sources = await self._balances.sources(hold.job_id)
                bonus.give_back(sources, bonus_kept(hold.from_allowance, charged))
                await self._balances.save_lots(lot for lot, _ in sources if lot is not None)
            used = allowance_part(hold.from_allowance, charged) - hold.from_allowance
            change = Change(bonus.permanent, -reserved, used, period_starts(reserve.created_at))
            await self._balances.apply(reserve.guild_id, reserve.user_id, change)
            return True
