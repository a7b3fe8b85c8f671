"""The credit service against a real SQLite file and a clock the tests move by hand."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.credits import (
    BudgetExceeded,
    CreditService,
    Estimate,
    InsufficientCredits,
    MemberBlocked,
    period_bounds,
)
from bot.edits import EditOptions
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.db import Database, Row
from storage.jobs import JobRepository, NewJob
from storage.ledger import EntryKind
from storage.store import open_db
from tests.sql import run_many, run_sql
from tests.unit.test_jobs import new_job

# A Wednesday, mid-month.
T0 = datetime(2026, 5, 13, 12, 0, tzinfo=UTC)
USD = {"low": 0.009, "medium": 0.034, "high": 0.133}
G, U, MOD = 1, 10, 7


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Harness:
    def __init__(self, db: Database, clock: Clock, credits: CreditsSettings, budget: BudgetSettings) -> None:
        self.db = db
        self.clock = clock
        self.service = CreditService(db, credits, budget, clock=clock)

    async def job(self, user_id: int = U, guild_id: int = G, estimate: Estimate | None = None) -> int:
        """A job row as intake writes it: with the estimate it is about to reserve."""
        job = await JobRepository(self.db).insert(
            new_job(
                guild_id=guild_id,
                user_id=user_id,
                credits_estimated=0 if estimate is None else estimate.credits,
                usd_reserved_micros=0 if estimate is None else estimate.usd_micros,
            )
        )
        return job.id

    async def reserve(
        self,
        credits: int,
        *,
        images: int = 1,
        usd_micros: int = 0,
        user_id: int = U,
        guild_id: int = G,
        roles: Sequence[int] = (),
    ) -> int:
        estimate = Estimate(credits, usd_micros, images)
        job = await self.job(user_id, guild_id, estimate)
        await self.service.reserve(
            guild_id=guild_id, user_id=user_id, role_ids=roles, job_id=job, estimate=estimate
        )
        return job

    async def available(self, user_id: int = U, guild_id: int = G, roles: Sequence[int] = ()) -> int:
        return (await self.service.balance(guild_id, user_id, roles)).available

    async def rows(self, sql: str) -> list[Row]:
        return await self.db.fetch_all(sql)


async def make(
    store_url: str, credits: CreditsSettings | None = None, budget: BudgetSettings | None = None
) -> Harness:
    db = await open_db(store_url)
    return Harness(db, Clock(), credits or CreditsSettings(), budget or BudgetSettings())


SETTINGS = CreditsSettings(default_allowance=50, period="day", dm_allowance=5)


@pytest.fixture
async def h(store_url: str) -> AsyncIterator[Harness]:
    """A harness whose ledger must still verify clean, and agree with the balances kept beside
    it, when the test is done."""
    harness = await make(store_url, SETTINGS)
    yield harness
    assert await harness.service.verify() == []
    assert await harness.service.balance_differences() == []
    await harness.db.close()


@pytest.fixture
async def tampered(store_url: str) -> AsyncIterator[Harness]:
    """A harness for tests that corrupt the ledger on purpose."""
    harness = await make(store_url, SETTINGS)
    yield harness
    await harness.db.close()


# Prices


async def test_estimate_multiplies_quality_resolution_and_count(h: Harness) -> None:
    service = h.service
    assert service.estimate(quality="high", resolution="1K", count=1, usd_per_image=USD) == Estimate(
        14, 133_000, 1
    )
    assert service.estimate(quality="medium", resolution="2K", count=3, usd_per_image=USD) == Estimate(
        24, 204_000, 3
    )
    assert service.estimate(quality="low", resolution="4K", count=2, usd_per_image=USD) == Estimate(
        8, 72_000, 2
    )
    with pytest.raises(ValueError, match="quality 'ultra'"):
        service.estimate(quality="ultra", resolution="1K", count=1, usd_per_image=USD)
    with pytest.raises(ValueError, match="resolution '8K'"):
        service.estimate(quality="low", resolution="8K", count=1, usd_per_image=USD)
    with pytest.raises(ValueError, match="quality 'high'"):
        service.estimate(quality="high", resolution="1K", count=1, usd_per_image={"low": 0.01})
    with pytest.raises(ValueError, match="at least one"):
        service.estimate(quality="low", resolution="1K", count=0, usd_per_image=USD)
    assert service.price_table()["high"] == {"1K": 14, "2K": 28, "4K": 56}


def test_an_estimate_is_a_whole_price_per_image() -> None:
    assert Estimate(28, 266_000, 2).credits_per_image == 14
    with pytest.raises(ValueError, match="per image"):
        Estimate(15, 0, 2)
    with pytest.raises(ValueError, match="at least one image"):
        Estimate(0, 0, 0)


# Periods


@pytest.mark.parametrize(
    ("now", "period", "start", "end"),
    [
        (
            datetime(2026, 5, 13, 23, 59, 59, 999999, UTC),
            "day",
            datetime(2026, 5, 13, tzinfo=UTC),
            datetime(2026, 5, 14, tzinfo=UTC),
        ),
        (
            datetime(2026, 5, 14, tzinfo=UTC),
            "day",
            datetime(2026, 5, 14, tzinfo=UTC),
            datetime(2026, 5, 15, tzinfo=UTC),
        ),
        # 2026-05-17 is a Sunday, 05-18 a Monday.
        (
            datetime(2026, 5, 17, 23, 59, tzinfo=UTC),
            "week",
            datetime(2026, 5, 11, tzinfo=UTC),
            datetime(2026, 5, 18, tzinfo=UTC),
        ),
        (
            datetime(2026, 5, 18, tzinfo=UTC),
            "week",
            datetime(2026, 5, 18, tzinfo=UTC),
            datetime(2026, 5, 25, tzinfo=UTC),
        ),
        (
            datetime(2026, 2, 28, 23, 0, tzinfo=UTC),
            "month",
            datetime(2026, 2, 1, tzinfo=UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        ),
        (
            datetime(2028, 2, 29, 23, 0, tzinfo=UTC),
            "month",
            datetime(2028, 2, 1, tzinfo=UTC),
            datetime(2028, 3, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 4, 30, 23, 0, tzinfo=UTC),
            "month",
            datetime(2026, 4, 1, tzinfo=UTC),
            datetime(2026, 5, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 1, 31, 23, 0, tzinfo=UTC),
            "month",
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 2, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
            "month",
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (datetime(2026, 5, 13, tzinfo=UTC), "none", None, None),
    ],
)
def test_period_bounds(now: datetime, period: str, start: datetime | None, end: datetime | None) -> None:
    assert period_bounds(period, now) == (start, end)


def test_period_bounds_are_utc_whatever_the_clock_zone() -> None:
    tokyo = datetime(2026, 5, 14, 8, 0, tzinfo=UTC).astimezone(ZoneInfo("Asia/Tokyo"))
    assert period_bounds("day", tokyo) == (
        datetime(2026, 5, 14, tzinfo=UTC),
        datetime(2026, 5, 15, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="unknown credit period"):
        period_bounds("fortnight", T0)


async def test_the_allowance_refills_at_the_instant_of_the_reset(h: Harness) -> None:
    h.clock.now = datetime(2026, 5, 13, 23, 0, tzinfo=UTC)
    job = await h.reserve(50)
    await h.service.settle(job, delivered_images=1)
    balance = await h.service.balance(G, U)
    assert (balance.available, balance.allowance_used, balance.refills_at) == (
        0,
        50,
        datetime(2026, 5, 14, tzinfo=UTC),
    )
    h.clock.now = datetime(2026, 5, 13, 23, 59, 59, 999999, UTC)
    assert await h.available() == 0
    h.clock.now = datetime(2026, 5, 14, tzinfo=UTC)
    assert await h.available() == 50


@pytest.mark.parametrize(
    ("period", "spend_at", "last_instant", "reset"),
    [
        (
            "week",
            datetime(2026, 5, 11, tzinfo=UTC),
            datetime(2026, 5, 17, 23, 59, 59, 999999, UTC),
            datetime(2026, 5, 18, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2026, 2, 1, tzinfo=UTC),
            datetime(2026, 2, 28, 23, 59, 59, 999999, UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2028, 2, 1, tzinfo=UTC),
            datetime(2028, 2, 29, 23, 59, 59, 999999, UTC),
            datetime(2028, 3, 1, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2026, 4, 1, tzinfo=UTC),
            datetime(2026, 4, 30, 23, 59, 59, 999999, UTC),
            datetime(2026, 5, 1, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2026, 12, 31, 23, 59, 59, 999999, UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
    ],
)
async def test_week_and_month_allowances_last_until_their_boundary(
    h: Harness, period: str, spend_at: datetime, last_instant: datetime, reset: datetime
) -> None:
    await h.service.set_period(guild_id=G, period=period, actor_id=MOD)  # type: ignore[arg-type]
    h.clock.now = spend_at
    await h.service.settle(await h.reserve(30), delivered_images=1)
    h.clock.now = last_instant
    balance = await h.service.balance(G, U)
    assert (balance.available, balance.period, balance.refills_at) == (20, period, reset)
    h.clock.now = reset
    assert await h.available() == 50


async def test_an_allowance_without_a_period_never_refills(h: Harness) -> None:
    await h.service.set_period(guild_id=G, period="none", actor_id=MOD)
    await h.service.settle(await h.reserve(30), delivered_images=1)
    h.clock.advance(days=400)
    balance = await h.service.balance(G, U)
    assert (balance.available, balance.refills_at) == (20, None)
    with pytest.raises(InsufficientCredits) as refused:
        await h.reserve(21)
    assert refused.value.refills_at is None
    assert refused.value.message == "This edit costs 21 credits but you have 20."


async def test_changing_the_period_applies_to_the_current_one_at_once(h: Harness) -> None:
    await h.service.set_period(guild_id=G, period="month", actor_id=MOD)
    await h.service.settle(await h.reserve(40), delivered_images=1)
    h.clock.advance(days=2)
    assert await h.available() == 10
    await h.service.set_period(guild_id=G, period="day", actor_id=MOD)
    assert await h.available() == 50
    with pytest.raises(ValueError, match="unknown credit period"):
        await h.service.set_period(guild_id=G, period="hourly", actor_id=MOD)  # type: ignore[arg-type]


# Allowances


async def test_best_role_wins_and_a_user_override_beats_roles(h: Harness) -> None:
    await h.service.set_allowance(guild_id=G, scope="default", target_id=0, amount=20, actor_id=MOD)
    await h.service.set_allowance(guild_id=G, scope="role", target_id=100, amount=5, actor_id=MOD)
    await h.service.set_allowance(guild_id=G, scope="role", target_id=101, amount=80, actor_id=MOD)
    assert await h.available(roles=[]) == 20
    assert await h.available(roles=[999]) == 20
    assert await h.available(roles=[100]) == 5
    assert await h.available(roles=[100, 101]) == 80
    await h.service.set_allowance(guild_id=G, scope="user", target_id=U, amount=3, actor_id=MOD)
    assert await h.available(roles=[100, 101]) == 3
    await h.service.set_allowance(guild_id=G, scope="user", target_id=U, amount=None, actor_id=MOD)
    assert await h.available(roles=[100, 101]) == 80
    await h.service.set_allowance(guild_id=G, scope="default", target_id=0, amount=None, actor_id=MOD)
    assert await h.available() == 50
    view = await h.service.quota(G)
    assert (view.period, view.default_allowance, view.server_cap) == ("day", 50, None)
    assert dict(view.roles) == {100: 5, 101: 80}
    assert dict(view.users) == {}
    with pytest.raises(ValueError, match="negative"):
        await h.service.set_allowance(guild_id=G, scope="user", target_id=U, amount=-1, actor_id=MOD)


async def test_a_role_change_mid_period_takes_effect_at_once(h: Harness) -> None:
    await h.service.set_allowance(guild_id=G, scope="role", target_id=101, amount=80, actor_id=MOD)
    await h.service.settle(await h.reserve(60, roles=[101]), delivered_images=1)
    assert await h.available(roles=[101]) == 20
    assert await h.available(roles=[]) == 0  # lost the role: 60 used of 50
    with pytest.raises(InsufficientCredits):
        await h.reserve(1, roles=[])
    await h.reserve(20, roles=[101])


async def test_direct_messages_use_guild_zero_and_the_dm_allowance(h: Harness) -> None:
    assert await h.available(guild_id=0) == 5
    job = await h.reserve(4, guild_id=0)
    assert await h.available(guild_id=0) == 1
    assert await h.available() == 50
    await h.service.settle(job, delivered_images=1)
    [entry] = [e for e in await h.service.history(0, U) if e.kind is EntryKind.CAPTURE]
    assert entry.guild_id == 0


# Reserve, settle, release


async def test_partial_delivery_captures_per_image_and_releases_the_rest(h: Harness) -> None:
    job = await h.reserve(42, images=3, usd_micros=399_000)
    balance = await h.service.balance(G, U)
    assert (balance.available, balance.reserved, balance.allowance_used) == (8, 42, 42)
    assert await h.service.settle(job, delivered_images=2) == 28
    balance = await h.service.balance(G, U)
    assert (balance.available, balance.reserved, balance.allowance_used) == (22, 0, 28)
    entries = [(e.kind, e.amount) for e in reversed(await h.service.history(G, U))]
    assert entries == [(EntryKind.RESERVE, -42), (EntryKind.CAPTURE, -28), (EntryKind.RELEASE, 14)]
    [row] = await h.rows(f"SELECT * FROM jobs WHERE id = {job}")
    assert (row["credits_estimated"], row["credits_charged"]) == (42, 28)
    assert (row["usd_reserved_micros"], row["usd_micros"]) == (399_000, 266_000)


async def test_full_delivery_has_no_release_and_the_host_cost_is_recorded(h: Harness) -> None:
    job = await h.reserve(28, images=2, usd_micros=266_000)
    assert await h.service.settle(job, delivered_images=5, usd_micros=300_000) == 28
    assert [e.kind for e in await h.service.history(G, U)] == [EntryKind.CAPTURE, EntryKind.RESERVE]
    [row] = await h.rows(f"SELECT usd_micros FROM jobs WHERE id = {job}")
    assert row["usd_micros"] == 300_000


async def test_a_failed_or_cancelled_edit_costs_nothing(h: Harness) -> None:
    await h.service.grant(guild_id=G, user_id=U, amount=10, actor_id=MOD, reason="gift")
    before = await h.service.balance(G, U)
    failed = await h.reserve(56, images=4)
    await h.service.release(failed, reason="the host failed")
    cancelled = await h.reserve(14)
    assert await h.service.settle(cancelled, delivered_images=0) == 0
    assert await h.service.balance(G, U) == before
    kinds = [(e.kind, e.amount) for e in await h.service.history(G, U, limit=4)]
    assert kinds == [
        (EntryKind.RELEASE, 14),
        (EntryKind.RESERVE, -14),
        (EntryKind.RELEASE, 56),
        (EntryKind.RESERVE, -56),
    ]


async def test_settle_and_release_are_idempotent_and_exclusive(h: Harness) -> None:
    job = await h.reserve(28, images=2)
    assert await h.service.settle(job, delivered_images=1) == 14
    snapshot = (await h.service.balance(G, U), len(await h.service.history(G, U, limit=100)))
    assert await h.service.settle(job, delivered_images=2) == 14
    await h.service.release(job, reason="recovery ran twice")
    assert (await h.service.balance(G, U), len(await h.service.history(G, U, limit=100))) == snapshot

    released = await h.reserve(14)
    await h.service.release(released, reason="cancelled")
    await h.service.release(released, reason="cancelled")
    assert await h.service.settle(released, delivered_images=1) == 0
    assert [e.kind for e in await h.service.history(G, U, limit=2)] == [EntryKind.RELEASE, EntryKind.RESERVE]


async def test_a_job_that_never_reserved_settles_to_nothing(h: Harness) -> None:
    job = await h.job()
    assert await h.service.settle(job, delivered_images=1) == 0
    await h.service.release(job, reason="crashed before reserving")
    assert await h.service.history(G, U) == []
    with pytest.raises(ValueError, match="negative"):
        await h.service.settle(job, delivered_images=-1)


async def test_reserving_twice_for_one_job_holds_once(h: Harness) -> None:
    job = await h.job()
    for _ in range(3):
        await h.service.reserve(guild_id=G, user_id=U, role_ids=(), job_id=job, estimate=Estimate(30, 0, 1))
    balance = await h.service.balance(G, U)
    assert (balance.reserved, balance.available) == (30, 20)


async def test_reserve_joins_the_callers_transaction(h: Harness) -> None:
    jobs = JobRepository(h.db)
    with pytest.raises(InsufficientCredits):
        async with h.db.transaction():
            job = await jobs.insert(
                NewJob(guild_id=G, channel_id=2, user_id=U, prompt="p", options=EditOptions(), inputs=[])
            )
            await h.service.reserve(
                guild_id=G, user_id=U, role_ids=(), job_id=job.id, estimate=Estimate(51, 0)
            )
    assert await h.rows("SELECT id FROM jobs") == []
    async with h.db.transaction():
        job = await jobs.insert(
            NewJob(guild_id=G, channel_id=2, user_id=U, prompt="p", options=EditOptions(), inputs=[])
        )
        await h.service.reserve(guild_id=G, user_id=U, role_ids=(), job_id=job.id, estimate=Estimate(20, 0))
    assert (await h.service.balance(G, U)).reserved == 20


async def test_insufficient_credits_says_cost_balance_and_refill(h: Harness) -> None:
    await h.reserve(45)
    with pytest.raises(InsufficientCredits) as refused:
        await h.reserve(14)
    error = refused.value
    assert (error.needed, error.available, error.refills_at) == (14, 5, datetime(2026, 5, 14, tzinfo=UTC))
    assert (
        error.message
        == "This edit costs 14 credits but you have 5; your allowance refills at 2026-05-14 00:00 UTC."
    )


# Bonus credits


async def test_bonus_is_spent_only_after_the_period_allowance(h: Harness) -> None:
    await h.service.grant(guild_id=G, user_id=U, amount=20, actor_id=MOD, reason="event prize")
    job = await h.reserve(40)
    balance = await h.service.balance(G, U)
    assert (balance.allowance_used, balance.bonus, balance.available) == (40, 20, 30)
    await h.service.settle(job, delivered_images=1)
    spill = await h.reserve(28, images=2)
    balance = await h.service.balance(G, U)
    assert (balance.allowance_used, balance.bonus, balance.available) == (50, 2, 2)
    # One of two images delivered: the 14 charged come from the allowance part (10) first.
    await h.service.settle(spill, delivered_images=1)
    balance = await h.service.balance(G, U)
    assert (balance.allowance_used, balance.bonus, balance.available) == (50, 16, 16)
    h.clock.advance(days=1)
    balance = await h.service.balance(G, U)
    assert (balance.allowance_used, balance.bonus, balance.available) == (0, 16, 66)


async def test_bonus_grants_expire_and_the_soonest_expiring_is_spent_first(h: Harness) -> None:
    await h.service.set_allowance(guild_id=G, scope="default", target_id=0, amount=0, actor_id=MOD)
    await h.service.grant(guild_id=G, user_id=U, amount=10, actor_id=MOD, reason="forever")
    await h.service.grant(
        guild_id=G, user_id=U, amount=10, actor_id=MOD, reason="weekend", expires_at=T0 + timedelta(hours=48)
    )
    await h.service.grant(
        guild_id=G, user_id=U, amount=10, actor_id=MOD, reason="today", expires_at=T0 + timedelta(hours=6)
    )
    assert await h.available() == 30
    await h.service.settle(await h.reserve(14), delivered_images=1)  # 10 from "today", 4 from "weekend"
    assert await h.available() == 16
    h.clock.advance(hours=6)
    assert await h.available() == 16  # "today" was spent in full, nothing of it left to lapse
    h.clock.advance(hours=42)
    assert await h.available() == 10  # the 6 left of "weekend" lapse at its expiry instant
    with pytest.raises(ValueError, match="expire before"):
        await h.service.grant(
            guild_id=G, user_id=U, amount=1, actor_id=MOD, reason="x", expires_at=h.clock.now
        )


async def test_credits_coming_back_after_their_grant_expired_lapse_too(h: Harness) -> None:
    await h.service.set_allowance(guild_id=G, scope="default", target_id=0, amount=0, actor_id=MOD)
    await h.service.grant(
        guild_id=G, user_id=U, amount=14, actor_id=MOD, reason="short", expires_at=T0 + timedelta(hours=1)
    )
    job = await h.reserve(14)
    h.clock.advance(hours=2)
    await h.service.release(job, reason="the host failed")
    balance = await h.service.balance(G, U)
    assert (balance.available, balance.reserved) == (0, 0)


async def test_a_hold_survives_the_period_reset_and_settles_against_the_old_period(h: Harness) -> None:
    h.clock.now = datetime(2026, 5, 13, 23, 59, tzinfo=UTC)
    job = await h.reserve(42, images=3)
    h.clock.now = datetime(2026, 5, 14, 0, 1, tzinfo=UTC)
    balance = await h.service.balance(G, U)
    assert (balance.available, balance.reserved, balance.allowance_used) == (50, 42, 0)
    await h.service.settle(job, delivered_images=1)
    assert await h.available() == 50


async def test_an_admin_revoke_can_leave_a_debt_a_member_never_can(h: Harness) -> None:
    await h.service.grant(guild_id=G, user_id=U, amount=5, actor_id=MOD, reason="oops")
    await h.service.revoke(guild_id=G, user_id=U, amount=12, actor_id=MOD, reason="abuse")
    balance = await h.service.balance(G, U)
    assert (balance.bonus, balance.available) == (-7, 43)
    with pytest.raises(InsufficientCredits):
        await h.reserve(44)
    await h.reserve(43)
    assert (await h.service.balance(G, U)).bonus == -7
    await h.service.adjust(guild_id=G, user_id=U, amount=7, actor_id=MOD, reason="settled the debt")
    assert (await h.service.balance(G, U)).bonus == 0
    with pytest.raises(ValueError, match="positive"):
        await h.service.revoke(guild_id=G, user_id=U, amount=0, actor_id=MOD, reason="x")
    with pytest.raises(ValueError, match="zero"):
        await h.service.adjust(guild_id=G, user_id=U, amount=0, actor_id=MOD, reason="x")
    with pytest.raises(ValueError, match="positive"):
        await h.service.grant(guild_id=G, user_id=U, amount=-1, actor_id=MOD, reason="x")


async def test_a_retried_grant_with_the_same_key_applies_once(h: Harness) -> None:
    for _ in range(3):
        await h.service.grant(
            guild_id=G, user_id=U, amount=10, actor_id=MOD, reason="gift", key="interaction-1"
        )
    await h.service.grant(guild_id=G, user_id=U, amount=10, actor_id=MOD, reason="gift", key="interaction-2")
    await h.service.revoke(guild_id=G, user_id=U, amount=3, actor_id=MOD, reason="x", key="interaction-1")
    assert (await h.service.balance(G, U)).bonus == 17
    assert len(await h.rows("SELECT id FROM audit_log WHERE action IN ('grant', 'revoke')")) == 3


# Blocks, caps, budgets


async def test_a_blocked_member_cannot_edit_until_unblocked(h: Harness) -> None:
    await h.service.block(guild_id=G, user_id=U, actor_id=MOD, reason="spam")
    assert await h.service.is_blocked(G, U)
    with pytest.raises(MemberBlocked) as refused:
        await h.reserve(1)
    assert refused.value.message == "A moderator has blocked you from editing images here."
    await h.reserve(1, user_id=11)
    await h.reserve(1, guild_id=2)
    await h.service.unblock(guild_id=G, user_id=U, actor_id=MOD)
    await h.reserve(1)
    actions = [row["action"] for row in await h.rows("SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["block", "unblock"]


async def test_the_server_cap_counts_holds_and_charges_of_everyone_this_period(h: Harness) -> None:
    await h.service.set_server_cap(guild_id=G, amount=60, actor_id=MOD)
    first = await h.reserve(42, images=3, user_id=11)
    await h.reserve(14, user_id=12)
    with pytest.raises(BudgetExceeded) as refused:
        await h.reserve(14)
    assert (refused.value.scope, refused.value.resets_at) == ("server", datetime(2026, 5, 14, tzinfo=UTC))
    assert "paused until 2026-05-14 00:00 UTC" in refused.value.message
    await h.service.settle(first, delivered_images=1)  # 28 come back to the server
    await h.reserve(14)
    await h.reserve(14, guild_id=2)  # other servers are not capped by it
    h.clock.advance(days=1)
    await h.reserve(28)
    await h.service.set_server_cap(guild_id=G, amount=None, actor_id=MOD)
    assert (await h.service.quota(G)).server_cap is None


async def test_the_owner_budget_is_never_overshot_by_concurrent_reservations(store_url: str) -> None:
    h = await make(store_url, CreditsSettings(default_allowance=1000), BudgetSettings(usd_per_day=1.0))
    try:
        jobs = [await h.job(user_id=100 + n) for n in range(40)]

        async def attempt(n: int) -> bool:
            try:
                await h.service.reserve(
                    guild_id=G, user_id=100 + n, role_ids=(), job_id=jobs[n], estimate=Estimate(14, 133_000)
                )
            except BudgetExceeded as refused:
                assert refused.scope == "day"
                return False
            return True

        results = await asyncio.gather(*(attempt(n) for n in range(40)))
        assert sum(results) == 7  # 7 × $0.133 = $0.931; an 8th would pass $1
        spend = await h.service.spend()
        assert (spend.day_usd_micros, spend.day_cap_micros, spend.month_cap_micros) == (
            931_000,
            1_000_000,
            None,
        )
        assert spend.day_resets_at == datetime(2026, 5, 14, tzinfo=UTC)
        assert spend.month_resets_at == datetime(2026, 6, 1, tzinfo=UTC)
        # Settling for less than was held makes room; the cap counts real spend.
        await h.service.settle(jobs[results.index(True)], delivered_images=1, usd_micros=10_000)
        assert (await h.service.spend()).day_usd_micros == 808_000
        await h.reserve(14, usd_micros=133_000, user_id=999)
        h.clock.advance(days=1)
        assert (await h.service.spend()).day_usd_micros == 0
        assert (await h.service.spend()).month_usd_micros == 941_000
        assert await h.service.verify() == []
    finally:
        await h.db.close()


async def test_the_monthly_budget_spans_days(store_url: str) -> None:
    h = await make(
        store_url, CreditsSettings(default_allowance=1000), BudgetSettings(usd_per_day=1.0, usd_per_month=1.5)
    )
    try:
        await h.reserve(14, usd_micros=900_000)
        h.clock.advance(days=1)
        with pytest.raises(BudgetExceeded) as refused:
            await h.reserve(14, usd_micros=700_000)
        assert (refused.value.scope, refused.value.resets_at) == ("month", datetime(2026, 6, 1, tzinfo=UTC))
        assert "owner's spending limit for this month" in refused.value.message
        await h.reserve(14, usd_micros=600_000)
    finally:
        await h.db.close()


# Moderator views


async def test_every_moderator_change_is_audited(h: Harness) -> None:
    await h.service.grant(
        guild_id=G, user_id=U, amount=5, actor_id=MOD, reason="a", expires_at=T0 + timedelta(days=1)
    )
    await h.service.revoke(guild_id=G, user_id=U, amount=1, actor_id=MOD, reason="b")
    await h.service.adjust(guild_id=G, user_id=U, amount=-1, actor_id=MOD, reason="c")
    await h.service.set_allowance(guild_id=G, scope="role", target_id=100, amount=9, actor_id=MOD)
    await h.service.set_period(guild_id=G, period="week", actor_id=MOD)
    await h.service.set_server_cap(guild_id=G, amount=100, actor_id=MOD)
    await h.service.block(guild_id=G, user_id=U, actor_id=MOD, reason="d")
    await h.service.unblock(guild_id=G, user_id=U, actor_id=MOD)
    audit = await h.rows("SELECT * FROM audit_log ORDER BY id")
    assert [(r["action"], r["target_id"], json.loads(r["detail"])) for r in audit] == [
        ("grant", U, {"amount": 5, "reason": "a", "expires_at": "2026-05-14T12:00:00.000000+00:00"}),
        ("revoke", U, {"amount": -1, "reason": "b"}),
        ("adjust", U, {"amount": -1, "reason": "c"}),
        ("set_allowance", 100, {"scope": "role", "amount": 9}),
        ("set_period", None, {"period": "week"}),
        ("set_server_cap", None, {"server_cap": 100}),
        ("block", U, {"reason": "d"}),
        ("unblock", U, {}),
    ]
    assert {(r["guild_id"], r["actor_id"], r["created_at"]) for r in audit} == {
        (G, MOD, "2026-05-13T12:00:00.000000+00:00")
    }


async def test_usage_ranks_members_by_credits_charged(h: Harness) -> None:
    await h.service.settle(await h.reserve(14, usd_micros=133_000, user_id=11), delivered_images=1)
    await h.service.settle(await h.reserve(28, images=2, usd_micros=266_000, user_id=12), delivered_images=2)
    await h.service.release(await h.reserve(14, user_id=13), reason="failed")
    await h.reserve(14, user_id=14)  # still running: not usage yet
    usage = await h.service.usage(G, since=T0)
    assert [(u.user_id, u.credits, u.edits, u.usd_micros) for u in usage] == [
        (12, 28, 1, 266_000),
        (11, 14, 1, 133_000),
        (13, 0, 0, 0),
    ]
    assert await h.service.usage(G, since=T0 + timedelta(hours=1)) == []


async def test_the_csv_export_parses_and_holds_the_whole_guild_ledger(h: Harness) -> None:
    await h.service.grant(
        guild_id=G,
        user_id=U,
        amount=5,
        actor_id=MOD,
        reason='=HYPERLINK("x"), "quoted"\nline two',
        expires_at=T0 + timedelta(days=2),
    )
    await h.service.settle(await h.reserve(28, images=2), delivered_images=1)
    await h.service.grant(guild_id=2, user_id=U, amount=5, actor_id=MOD, reason="elsewhere")
    text = await h.service.export_csv(G)
    assert text.endswith("\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [(r["kind"], r["amount"]) for r in rows] == [
        ("grant", "5"),
        ("reserve", "-28"),
        ("capture", "-14"),
        ("release", "14"),
    ]
    grant = rows[0]
    assert grant["reason"] == '\'=HYPERLINK("x"), "quoted"\nline two'
    assert (grant["actor_id"], grant["job_id"], grant["expires_at"]) == (
        "7",
        "",
        "2026-05-15T12:00:00.000000+00:00",
    )
    assert rows[1]["actor_id"] == ""
    assert {r["guild_id"] for r in rows} == {"1"}
    assert list(rows[0]) == [
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
    ]


async def test_verify_finds_a_tampered_ledger(tampered: Harness) -> None:
    h = tampered
    job = await h.reserve(28, images=2)
    await h.service.settle(job, delivered_images=1)
    assert await h.service.verify() == []
    stray, unreserved = await h.job(), await h.job()
    now = "2026-05-13T12:00:00.000000+00:00"
    await run_many(
        h.db,
        "INSERT INTO ledger (guild_id, user_id, kind, amount, job_id, idempotency_key, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (G, U, "release", 5, job, "forged", now),
            (G, U, "capture", -3, stray, "orphan", now),
            (G, U, "grant", -4, None, "negative grant", now),
        ],
    )
    await run_sql(h.db, "INSERT INTO credit_holds VALUES (?, 1, 0, 0)", (unreserved,))
    problems = await h.service.verify()
    assert f"job {job}: reserve -28 + release 19 != capture -14" in problems
    assert any(p.startswith(f"job {job}: entries") for p in problems)
    assert f"member {U} in {G}: job {stray}: capture without a reserve before it" in problems
    assert any(p.endswith("grant of -4 has the wrong sign") for p in problems)
    assert f"job {unreserved}: a hold without a reserve entry" in problems


async def test_verify_finds_bonus_a_member_spent_without_having_it(tampered: Harness) -> None:
    h = tampered
    job = await h.job()
    await run_sql(
        h.db,
        "INSERT INTO ledger (guild_id, user_id, kind, amount, job_id, idempotency_key, created_at) "
        "VALUES (?, ?, 'reserve', -30, ?, 'forged', '2026-05-13T12:00:00.000000+00:00')",
        (G, U, job),
    )
    await run_sql(h.db, "INSERT INTO credit_holds VALUES (?, 1, 10, 0)", (job,))
    assert await h.service.verify() == [
        f"member {U} in {G}: job {job}: held 20 bonus credits when 0 were available"
    ]
