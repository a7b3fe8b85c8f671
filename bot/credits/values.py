"""What the credit rules speak in: prices, balances, periods and the refusals a member is shown."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from bot.runtime.config import Period

PERIODS: tuple[Period, ...] = ("day", "week", "month", "none")
MICROS_PER_USD = 1_000_000
# Direct messages with the bot have no server; their credits live under this guild id.
DM_GUILD = 0
# Neither have edits made through a member's own install (a server without Retouch, a group DM):
# their credits live under this one, which no Discord snowflake can be (they are never negative).
PERSONAL_GUILD = -1


def credit_scope(guild_id: int | None, *, personal: bool) -> int:
    """Where an edit's credits are kept: its server's books; the DM books for the bot's DMs; the
    personal books for a member's own install where no server installed Retouch."""
    if personal:
        return PERSONAL_GUILD
    return DM_GUILD if guild_id is None else guild_id


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """[start, next reset) of the period holding `now`; (None, None) for an allowance that never resets."""
    return _bounds(period, now.astimezone(UTC).date())


@functools.lru_cache(maxsize=64)
def _bounds(period: str, on: date) -> tuple[datetime | None, datetime | None]:
    """Remembered: every reservation and settlement asks for the same few periods' bounds."""
    day = datetime(on.year, on.month, on.day, tzinfo=UTC)
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


def micros(usd: float) -> int:
    return round(usd * MICROS_PER_USD)


def budget_window(scope: Literal["day", "month"], now: datetime) -> tuple[datetime, datetime]:
    start, end = period_bounds(scope, now)
    assert start is not None and end is not None
    return start, end


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


class ConfirmFirst(Exception):
    """The member must confirm this edit before it is made (`reserve`'s `ask_first` said so); the
    reservation, and the transaction it joined, are undone."""

    def __init__(self, balance: Balance) -> None:
        super().__init__("the member must confirm first")
        self.balance = balance


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
