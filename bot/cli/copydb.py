"""`python -m bot copy-db --from URL --to URL`: move an install between SQLite and PostgreSQL.

The copy is checked, not trusted: after it, every table must hold as many rows on both sides,
and every member's balance, recomputed from each side's ledger by the credit service itself at
one instant, must be the same, as must what `verify()` finds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.credits import CreditService
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.copy import copy_rows, count, ledger_members, tables
from storage.db import Database
from storage.store import StoreUrl, open_db


@dataclass
class CopyReport:
    source: str
    target: str
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # table: (source, target)
    members: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def render(self) -> list[str]:
        lines = [f"Copied {self.source} to {self.target}:"]
        lines += [f"  {table}: {copied} rows" for table, (copied, _) in self.rows.items()]
        lines.append(f"  balances of {self.members} members recomputed on both sides")
        if self.ok:
            lines.append("Verified: every table has the same rows count and every balance is equal.")
        else:
            lines += [
                "The copy does NOT match (the source is unchanged):",
                *(f"  {d}" for d in self.differences),
            ]
        return lines


async def copy_db(
    source_url: StoreUrl, target_url: StoreUrl, credits: CreditsSettings, budget: BudgetSettings
) -> CopyReport:
    report = CopyReport(str(source_url), str(target_url))
    source = await open_db(source_url)
    try:
        target = await open_db(target_url)
        try:
            await copy_rows(source, target)
            await _verify(source, target, credits, budget, report)
        finally:
            await target.close()
    finally:
        await source.close()
    return report


async def _verify(
    source: Database, target: Database, credits: CreditsSettings, budget: BudgetSettings, report: CopyReport
) -> None:
    for table in await tables(source):
        counts = (await count(source, table), await count(target, table))
        report.rows[table] = counts
        if counts[0] != counts[1]:
            report.differences.append(f"{table}: {counts[0]} rows in the source, {counts[1]} in the target")
    now = datetime.now(UTC)
    before, after = (CreditService(db, credits, budget, clock=lambda: now) for db in (source, target))
    members = await ledger_members(source)
    report.members = len(members)
    for guild_id, user_id in members:
        was, became = await before.balance(guild_id, user_id), await after.balance(guild_id, user_id)
        if was != became:
            report.differences.append(f"member {user_id} in {guild_id}: {was} before, {became} after")
    problems = (await before.verify(), await after.verify())
    if problems[0] != problems[1]:
        report.differences.append(f"verify() found {problems[0]} before and {problems[1]} after")
