"""Each member's credits as they stand, kept beside the ledger so a reservation reads one row.

The ledger stays the source of truth; these tables are what replaying it would give, written in
the same transaction as each entry, under the member's lock (`lock_member`), by
`bot.credits.books`. `python -m bot verify-ledger` replays the ledger and compares.

- `member_balances`: one row per member: the permanent bonus lot (negative = a debt), the credits
  on hold, and the allowance used in the current day, week and month (each with the start of the
  period it counts) and ever. Every write is a delta (`Change`); a delta for a period that is no
  longer the stored one is dropped, because only the current period's use decides a balance. A
  row marked `stale` was made by the migration (SQLite 0011, PostgreSQL 0002) for a member who
  already had entries: it is rebuilt from the ledger (`fill`) before it is first read.
- `bonus_lots`: each grant with an expiry and what is left of it.
- `hold_sources`: where the bonus part of each hold came from, in the order taken, so what
  settling gives back returns to the lot it came from.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from storage.db import Database, Row, ts

# The periods an allowance can reset on; "none" (never resets) is `all_used`.
PERIOD_COLUMNS = ("day", "week", "month")


@dataclass
class BonusLot:
    """A grant that expires, and how much of it is left (mutable: the wallet spends from it)."""

    grant_id: int
    expires_at: datetime
    remaining: int


# Where a hold's bonus came from, in the order taken: (lot, credits); None is the permanent lot.
Sources = list[tuple[BonusLot | None, int]]


@dataclass(frozen=True)
class PeriodUse:
    starts: str  # ts() of the period's start; '' before any reservation
    used: int


@dataclass(frozen=True)
class Standing:
    """A member's row as stored; `lot_bonus` is what their unexpired lots hold at the time asked."""

    permanent: int = 0
    reserved: int = 0
    periods: Mapping[str, PeriodUse] = field(default_factory=dict)
    all_used: int = 0
    lot_bonus: int = 0
    stale: bool = False


@dataclass(frozen=True)
class Change:
    """What one ledger entry does to a member's row. `starts` are the starts of the periods
    holding the job's reservation (by `PERIOD_COLUMNS`); `used` is added to those periods' use
    and to the use ever. An entry that is not a job's leaves the periods alone ('' starts)."""

    permanent: int = 0
    reserved: int = 0
    used: int = 0
    starts: Mapping[str, datetime] = field(default_factory=dict)


def _period_sets() -> str:
    sets = []
    for p in PERIOD_COLUMNS:
        old, new = f"member_balances.{p}_starts", f"excluded.{p}_starts"
        sets.append(
            f"{p}_used = CASE WHEN {old} = {new} THEN member_balances.{p}_used + excluded.{p}_used"
            f" WHEN {old} < {new} THEN excluded.{p}_used ELSE member_balances.{p}_used END"
        )
        sets.append(f"{p}_starts = CASE WHEN {old} < {new} THEN {new} ELSE {old} END")
    return ",\n".join(sets)


_PERIOD_NAMES = ", ".join(f"{p}_starts, {p}_used" for p in PERIOD_COLUMNS)
_APPLY = f"""
    INSERT INTO member_balances (guild_id, user_id, permanent, reserved, {_PERIOD_NAMES}, all_used)
    VALUES (?, ?, ?, ?, {", ".join("?, ?" for _ in PERIOD_COLUMNS)}, ?)
    ON CONFLICT (guild_id, user_id) DO UPDATE SET
        permanent = member_balances.permanent + excluded.permanent,
        reserved = member_balances.reserved + excluded.reserved,
        {_period_sets()},
        all_used = member_balances.all_used + excluded.all_used
"""  # noqa: S608
_FILL = f"""
    UPDATE member_balances SET permanent = ?, reserved = ?,
        {", ".join(f"{p}_starts = ?, {p}_used = ?" for p in PERIOD_COLUMNS)}, all_used = ?, stale = 0
    WHERE guild_id = ? AND user_id = ?
"""  # noqa: S608


# A member's unexpired lots' credits at a time (the one parameter), for a row `b` of `member_balances`.
LOT_BONUS = """(SELECT COALESCE(SUM(l.remaining), 0) FROM bonus_lots l
                WHERE l.guild_id = b.guild_id AND l.user_id = b.user_id AND l.expires_at > ?)"""


def standing_from_row(row: Row) -> Standing:
    """A `member_balances` row read with its `lot_bonus`."""
    return Standing(
        permanent=row["permanent"],
        reserved=row["reserved"],
        periods={p: PeriodUse(row[f"{p}_starts"], row[f"{p}_used"]) for p in PERIOD_COLUMNS},
        all_used=row["all_used"],
        lot_bonus=int(row["lot_bonus"]),  # PostgreSQL sums BIGINT into NUMERIC
        stale=bool(row["stale"]),
    )


def _lot(row: Row) -> BonusLot:
    return BonusLot(row["grant_id"], datetime.fromisoformat(row["expires_at"]), row["remaining"])


class BalanceRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def lock_member(self, guild_id: int, user_id: int) -> None:
        """Make every other transaction touching this member's credits wait for this one."""
        async with self._db.transaction() as tx:
            await tx.lock(f"member:{guild_id}:{user_id}")

    async def apply(self, guild_id: int, user_id: int, change: Change) -> None:
        periods: list[object] = []
        for p in PERIOD_COLUMNS:
            start = change.starts.get(p)
            periods += ["" if start is None else _start_mark(start), change.used]
        async with self._db.transaction() as tx:
            await tx.execute(
                _APPLY, (guild_id, user_id, change.permanent, change.reserved, *periods, change.used)
            )

    async def add_lot(self, guild_id: int, user_id: int, lot: BonusLot) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO bonus_lots (grant_id, guild_id, user_id, expires_at, remaining) "
                "VALUES (?, ?, ?, ?, ?)",
                (lot.grant_id, guild_id, user_id, ts(lot.expires_at), lot.remaining),
            )

    async def live_lots(self, guild_id: int, user_id: int, at: datetime) -> list[BonusLot]:
        """The lots bonus can be taken from at `at`, soonest-expiring first (then oldest grant)."""
        rows = await self._db.fetch_all(
            "SELECT * FROM bonus_lots WHERE guild_id = ? AND user_id = ? AND expires_at > ? "
            "AND remaining > 0 ORDER BY expires_at, grant_id",
            (guild_id, user_id, ts(at)),
        )
        return [_lot(row) for row in rows]

    async def save_lots(self, lots: Iterable[BonusLot]) -> None:
        async with self._db.transaction() as tx:
            await tx.executemany(
                "UPDATE bonus_lots SET remaining = ? WHERE grant_id = ?",
                [(lot.remaining, lot.grant_id) for lot in lots],
            )

    async def add_sources(self, job_id: int, sources: Sources) -> None:
        async with self._db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO hold_sources (job_id, seq, grant_id, amount) VALUES (?, ?, ?, ?)",
                [(job_id, seq, _grant(lot), used) for seq, (lot, used) in enumerate(sources)],
            )

    async def sources(self, job_id: int) -> Sources:
        """The job's sources with their lots as they stand now."""
        rows = await self._db.fetch_all(
            """
            SELECT s.amount, s.grant_id, l.expires_at, l.remaining FROM hold_sources s
            LEFT JOIN bonus_lots l ON l.grant_id = s.grant_id
            WHERE s.job_id = ? ORDER BY s.seq
            """,
            (job_id,),
        )
        return [(None if row["grant_id"] is None else _lot(row), row["amount"]) for row in rows]

    async def fill(
        self,
        guild_id: int,
        user_id: int,
        standing: Standing,
        lots: Sequence[BonusLot],
        sources: Mapping[int, Sources],
    ) -> None:
        """Replace a member's row, lots and open holds' sources with values rebuilt from the ledger.

        `sources` holds every job of the member: settled ones with no sources, so a stale guess
        made before the rebuild goes too.
        """
        periods: list[object] = []
        for p in PERIOD_COLUMNS:
            use = standing.periods.get(p, PeriodUse("", 0))
            periods += [use.starts, use.used]
        async with self._db.transaction() as tx:
            await tx.execute(
                _FILL, (standing.permanent, standing.reserved, *periods, standing.all_used, guild_id, user_id)
            )
            await tx.executemany(
                """
                INSERT INTO bonus_lots (grant_id, guild_id, user_id, expires_at, remaining)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (grant_id) DO UPDATE SET remaining = excluded.remaining
                """,
                [(lot.grant_id, guild_id, user_id, ts(lot.expires_at), lot.remaining) for lot in lots],
            )
            await tx.executemany("DELETE FROM hold_sources WHERE job_id = ?", [(job,) for job in sources])
            await tx.executemany(
                "INSERT INTO hold_sources (job_id, seq, grant_id, amount) VALUES (?, ?, ?, ?)",
                [
                    (job, seq, _grant(lot), used)
                    for job, taken in sources.items()
                    for seq, (lot, used) in enumerate(taken)
                ],
            )

    async def everyone(self) -> dict[tuple[int, int], Standing]:
        """Every member's row as stored, with `lot_bonus` left 0 (verify compares lots one by one)."""
        rows = await self._db.fetch_all("SELECT *, 0 AS lot_bonus FROM member_balances")
        return {(row["guild_id"], row["user_id"]): standing_from_row(row) for row in rows}

    async def all_lots(self) -> dict[int, tuple[int, int, BonusLot]]:
        """Every lot by grant id, with its member."""
        rows = await self._db.fetch_all("SELECT * FROM bonus_lots")
        return {row["grant_id"]: (row["guild_id"], row["user_id"], _lot(row)) for row in rows}

    async def all_sources(self) -> dict[int, list[tuple[int | None, int]]]:
        """Every hold's sources by job, as (grant id or None, credits) in the order taken."""
        rows = await self._db.fetch_all("SELECT * FROM hold_sources ORDER BY job_id, seq")
        found: dict[int, list[tuple[int | None, int]]] = {}
        for row in rows:
            found.setdefault(row["job_id"], []).append((row["grant_id"], row["amount"]))
        return found


@functools.lru_cache(maxsize=16)
def _start_mark(start: datetime) -> str:
    """Remembered: every entry of a day names the same period starts."""
    return ts(start)


def _grant(lot: BonusLot | None) -> int | None:
    return None if lot is None else lot.grant_id
