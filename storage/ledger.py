"""The credits ledger: append-only entries, and the holds that describe each reservation.

Nothing here decides anything; `bot.credits` owns the rules and derives balances from what
these queries return. Every write goes through `Database.transaction()`, so it joins the
caller's transaction when there is one. An entry's idempotency key is UNIQUE: appending a key
that is already there changes nothing and `append` says so (no id), which is what makes a retried
grant, reservation or settlement apply once.

Sign convention (see `bot.credits` for the rules built on it): `amount` is the change the
entry makes to what the member can spend. `capture` is the exception: it records the charge,
but the credits already left at `reserve`, so sums of spendable credits skip it. For every
settled job, reserve + release = capture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from storage.db import Database, Row, ts


class EntryKind(StrEnum):
    GRANT = "grant"
    REVOKE = "revoke"
    RESERVE = "reserve"
    CAPTURE = "capture"
    RELEASE = "release"
    ADJUST = "adjust"


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class NewEntry:
    guild_id: int
    user_id: int
    kind: EntryKind
    amount: int
    idempotency_key: str
    created_at: datetime
    job_id: int | None = None
    actor_id: int | None = None
    reason: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    guild_id: int
    user_id: int
    kind: EntryKind
    amount: int
    job_id: int | None
    actor_id: int | None
    reason: str | None
    idempotency_key: str
    expires_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> LedgerEntry:
        return cls(
            id=row["id"],
            guild_id=row["guild_id"],
            user_id=row["user_id"],
            kind=EntryKind(row["kind"]),
            amount=row["amount"],
            job_id=row["job_id"],
            actor_id=row["actor_id"],
            reason=row["reason"],
            idempotency_key=row["idempotency_key"],
            expires_at=_dt(row["expires_at"]),
            created_at=datetime.fromisoformat(row["created_at"]),
        )


@dataclass(frozen=True)
class Hold:
    job_id: int
    images: int
    from_allowance: int
    usd_micros: int


@dataclass(frozen=True)
class UsageRow:
    user_id: int
    credits: int
    edits: int
    usd_micros: int


class LedgerRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, entry: NewEntry) -> int | None:
        """Add an entry and return its id; None when its idempotency key was already used
        (nothing changed)."""
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(
                """
                INSERT INTO ledger (guild_id, user_id, kind, amount, job_id, actor_id, reason,
                                    idempotency_key, expires_at, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
                """,
                (
                    entry.guild_id,
                    entry.user_id,
                    entry.kind.value,
                    entry.amount,
                    entry.job_id,
                    entry.actor_id,
                    entry.reason,
                    entry.idempotency_key,
                    None if entry.expires_at is None else ts(entry.expires_at),
                    ts(entry.created_at),
                ),
            )
            return None if row is None else int(row[0])

    async def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return await self._db.fetch_all(sql, params)

    async def _scalar(self, sql: str, params: Sequence[object]) -> int:
        [row] = await self._rows(sql, params)
        return int(row[0])

    async def _entries(self, sql: str, params: Sequence[object] = ()) -> list[LedgerEntry]:
        return [LedgerEntry.from_row(row) for row in await self._rows(sql, params)]

    async def member_ledger(self, guild_id: int, user_id: int) -> tuple[list[LedgerEntry], dict[int, Hold]]:
        """The member's entries oldest first (the order a balance is replayed in) and their jobs' holds."""
        return await self._with_holds("l.guild_id = ? AND l.user_id = ?", (guild_id, user_id))

    async def job_entries(self, job_id: int) -> list[LedgerEntry]:
        return await self._entries("SELECT * FROM ledger WHERE job_id = ? ORDER BY id", (job_id,))

    async def job_books(self, job_id: int) -> tuple[list[LedgerEntry], Hold | None]:
        """The job's entries and its hold, in one read (settling needs both)."""
        entries, holds = await self._with_holds("l.job_id = ?", (job_id,))
        return entries, holds.get(job_id)

    async def _with_holds(
        self, where: str, params: Sequence[object]
    ) -> tuple[list[LedgerEntry], dict[int, Hold]]:
        rows = await self._rows(
            f"""
            SELECT l.*, h.images, h.from_allowance, h.usd_micros FROM ledger l
            LEFT JOIN credit_holds h ON l.kind = 'reserve' AND h.job_id = l.job_id
            WHERE {where} ORDER BY l.id
            """,  # noqa: S608
            params,
        )
        holds = {row["job_id"]: _hold(row) for row in rows if row["images"] is not None}
        return [LedgerEntry.from_row(row) for row in rows], holds

    async def history(self, guild_id: int, user_id: int, *, limit: int, offset: int) -> list[LedgerEntry]:
        """Newest first, for a member looking at their recent credits."""
        return await self._entries(
            "SELECT * FROM ledger WHERE guild_id = ? AND user_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
            (guild_id, user_id, limit, offset),
        )

    async def guild_entries(self, guild_id: int) -> list[LedgerEntry]:
        return await self._entries("SELECT * FROM ledger WHERE guild_id = ? ORDER BY id", (guild_id,))

    async def all_entries(self) -> list[LedgerEntry]:
        """Every entry grouped by member, oldest first within each: what `verify` replays."""
        return await self._entries("SELECT * FROM ledger ORDER BY guild_id, user_id, id")

    async def add_hold(self, hold: Hold) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO credit_holds (job_id, images, from_allowance, usd_micros) VALUES (?, ?, ?, ?)",
                (hold.job_id, hold.images, hold.from_allowance, hold.usd_micros),
            )

    async def all_holds(self) -> dict[int, Hold]:
        return {row["job_id"]: _hold(row) for row in await self._rows("SELECT * FROM credit_holds")}

    async def committed_credits(self, guild_id: int, since: datetime | None) -> int:
        """Credits a server's jobs reserved since `since` (None: ever): the hold while open, the charge once settled.

        -(reserve + release) is exactly that: R while only the reserve exists, C afterwards.
        """
        return await self._scalar(
            """
            SELECT COALESCE(-SUM(e.amount), 0) FROM ledger r
            JOIN ledger e ON e.job_id = r.job_id AND e.kind IN ('reserve', 'release')
            WHERE r.kind = 'reserve' AND r.guild_id = ? AND r.created_at >= ?
            """,
            (guild_id, "" if since is None else ts(since)),
        )

    async def committed_usd(self, *starts: datetime, guild_id: int | None = None) -> list[int]:
        """Owner money for jobs reserved since each start, in all servers or in one: held while
        open, spent once settled."""
        if not starts:
            return []
        windows = ", ".join(
            "COALESCE(SUM(CASE WHEN r.created_at >= ? THEN cost ELSE 0 END), 0)" for _ in starts
        )
        sql = f"""
            WITH costs AS (
                SELECT r.created_at AS created_at,
                       CASE WHEN EXISTS (SELECT 1 FROM ledger s
                                         WHERE s.job_id = r.job_id AND s.kind IN ('capture', 'release'))
                            THEN j.usd_micros ELSE h.usd_micros END AS cost
                FROM ledger r
                JOIN credit_holds h ON h.job_id = r.job_id
                JOIN jobs j ON j.id = r.job_id
                WHERE r.kind = 'reserve' AND r.created_at >= ? AND (CAST(? AS BIGINT) IS NULL OR r.guild_id = ?)
            )
            SELECT {windows} FROM costs r
        """  # noqa: S608
        [row] = await self._rows(sql, (ts(min(starts)), guild_id, guild_id, *(ts(start) for start in starts)))
        return [int(row[index]) for index in range(len(starts))]

    async def record_settlement(self, job_id: int, *, credits: int, usd_micros: int) -> None:
        """Mirror the settlement on the job row: job views read it, and the owner's budget counts
        a settled job's cost from it (`committed_usd`)."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE jobs SET credits_charged = ?, usd_micros = ? WHERE id = ?",
                (credits, usd_micros, job_id),
            )

    async def usage(self, guild_id: int, since: datetime) -> list[UsageRow]:
        """Per member, what the server's jobs settled since `since` charged and cost the owner."""
        rows = await self._rows(
            """
            SELECT r.user_id AS user_id,
                   COALESCE(-SUM(c.amount), 0) AS credits,
                   COUNT(c.id) AS edits,
                   SUM(j.usd_micros) AS usd_micros
            FROM ledger r
            JOIN jobs j ON j.id = r.job_id
            LEFT JOIN ledger c ON c.job_id = r.job_id AND c.kind = 'capture'
            WHERE r.kind = 'reserve' AND r.guild_id = ?
              AND (SELECT MIN(s.created_at) FROM ledger s
                   WHERE s.job_id = r.job_id AND s.kind IN ('capture', 'release')) >= ?
            GROUP BY r.user_id
            ORDER BY credits DESC, usd_micros DESC, user_id
            """,
            (guild_id, ts(since)),
        )
        return [UsageRow(row["user_id"], row["credits"], row["edits"], row["usd_micros"]) for row in rows]


def _hold(row: Row) -> Hold:
    return Hold(
        job_id=row["job_id"],
        images=row["images"],
        from_allowance=row["from_allowance"],
        usd_micros=row["usd_micros"],
    )
