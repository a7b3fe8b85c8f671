"""Reports on credits: a server's settings, a member's history, usage, spend, CSV and the audit.

They only read, so they can be asked for at any time without touching a balance.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import defaultdict
from datetime import datetime

from bot.credits.base import CreditBase
from bot.credits.books import replayed, used_in
from bot.credits.values import PERIODS, QuotaView, Spend, budget_window, micros
from bot.credits.wallet import Wallet, entry_problems, job_problems
from storage.balances import Standing
from storage.db import ts
from storage.ledger import LedgerEntry, UsageRow

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


class Reports(CreditBase):
    async def quota(self, guild_id: int) -> QuotaView:
        async with self._db.transaction():
            settings = await self._quotas.guild_credits(guild_id)
            rows = await self._quotas.allowances(guild_id)
        return QuotaView(
            period=settings.period or self._credits.period,
            default_allowance=self._default_allowance(rows.default, guild_id),
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
        day_start, day_end = budget_window("day", now)
        month_start, month_end = budget_window("month", now)
        day, month = await self._ledger.committed_usd(day_start, month_start, guild_id=guild_id)
        everywhere = guild_id is None
        day_cap, month_cap = self._budget.usd_per_day, self._budget.usd_per_month
        return Spend(
            day_usd_micros=day,
            month_usd_micros=month,
            day_cap_micros=micros(day_cap) if everywhere and day_cap is not None else None,
            month_cap_micros=micros(month_cap) if everywhere and month_cap is not None else None,
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
            problems += [f"member {user_id} in {guild_id}: {p}" for p in Wallet(list(group), holds).problems]
        by_job: defaultdict[int, list[LedgerEntry]] = defaultdict(list)
        for entry in entries:
            problems += entry_problems(entry)
            if entry.job_id is not None:
                by_job[entry.job_id].append(entry)
        for job_id, job_entries in by_job.items():
            problems += job_problems(job_id, job_entries, holds.get(job_id))
        problems += [
            f"job {job_id}: a hold without a reserve entry" for job_id in holds.keys() - by_job.keys()
        ]
        return problems

    async def balance_differences(self) -> list[str]:
        """Where the balances kept beside the ledger differ from replaying it; empty means they
        agree. Rows the migration left to be rebuilt on first use have nothing to compare yet."""
        now = self._now()
        async with self._db.transaction():
            entries = await self._ledger.all_entries()
            holds = await self._ledger.all_holds()
            kept = await self._balances.everyone()
            lots = await self._balances.all_lots()
            sources = await self._balances.all_sources()
        ledgers = {
            member: list(group)
            for member, group in itertools.groupby(entries, key=lambda e: (e.guild_id, e.user_id))
        }
        kept_lots: defaultdict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        for grant_id, (guild_id, user_id, lot) in lots.items():
            kept_lots[guild_id, user_id][grant_id] = lot.remaining
        problems: list[str] = []
        for guild_id, user_id in sorted(ledgers.keys() | kept.keys()):
            standing = kept.get((guild_id, user_id), Standing())
            if standing.stale:
                continue
            wallet = Wallet(ledgers.get((guild_id, user_id), []), holds)
            expected = replayed(wallet, now)
            found = {
                "the permanent bonus": (standing.permanent, expected.permanent),
                "the credits on hold": (standing.reserved, expected.reserved),
                **{
                    f"the allowance used ({period})": (
                        used_in(standing, period, now),
                        used_in(expected, period, now),
                    )
                    for period in PERIODS
                },
                "the bonus lots": (
                    kept_lots.get((guild_id, user_id), {}),
                    {lot.grant_id: lot.remaining for lot in wallet.purse.lots},
                ),
                "the open holds' sources": (
                    {
                        job: sources[job]
                        for job, job_row in wallet.jobs.items()
                        if job in sources and job_row.charged is None
                    },
                    {
                        job: [(None if lot is None else lot.grant_id, used) for lot, used in job_row.taken]
                        for job, job_row in wallet.jobs.items()
                        if job_row.charged is None and job_row.taken
                    },
                ),
            }
            problems += [
                f"member {user_id} in {guild_id}: {what} is {got} in the balances but {want} in the ledger"
                for what, (got, want) in found.items()
                if got != want
            ]
        return problems


def _blank(value: int | None) -> int | str:
    return "" if value is None else value


def _inert(text: str) -> str:
    """Keep a spreadsheet from running a moderator's reason as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
