"""The state the credit service's parts share: the database, the settings and the clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bot.credits.books import Books
from bot.credits.values import DM_GUILD, PERSONAL_GUILD
from bot.runtime.clock import SYSTEM_CLOCK
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.balances import BalanceRepository
from storage.db import Database
from storage.ledger import LedgerRepository
from storage.member_credits import MemberCreditsRepository
from storage.quotas import QuotaRepository


class CreditBase:
    """The books and settings every part of the credit service works on.

    The service is one object to its callers (`bot.credits` on the bot) but its parts, member
    balances and holds, moderator actions and reports, live in a module each; they share this.
    """

    def __init__(
        self,
        db: Database,
        credits: CreditsSettings,
        budget: BudgetSettings,
        *,
        clock: Callable[[], datetime] = SYSTEM_CLOCK.now,
    ) -> None:
        self._db = db
        self._credits = credits
        self._budget = budget
        self._clock = clock
        self._ledger = LedgerRepository(db)
        self._books = Books(db)
        self._balances = BalanceRepository(db)
        self._quotas = QuotaRepository(db)
        self._member_credits = MemberCreditsRepository(db)

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def _default_allowance(self, default: int | None, guild_id: int) -> int:
        """The server's default allowance row, else the configured one for its kind of books."""
        if default is not None:
            return default
        if guild_id == DM_GUILD:
            return self._credits.dm_allowance
        if guild_id == PERSONAL_GUILD:
            return self._credits.personal_allowance
        return self._credits.default_allowance
