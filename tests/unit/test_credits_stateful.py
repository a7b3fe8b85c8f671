"""The credit service driven by hypothesis, step by step, against an in-memory model of its rules.

The model keeps its state incrementally (lots, holds, jobs as plain Python objects), as the
service does in its kept balances; after every step the two must agree on every member's
balance, the owner's spend and every reservation outcome, the service's own `verify()` must find
the ledger healthy, and the kept balances must equal the ones replayed from the whole ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bot.credits import (
    Balance,
    BudgetExceeded,
    CreditError,
    CreditService,
    Estimate,
    InsufficientCredits,
    MemberBlocked,
    Spend,
    period_bounds,
)
from bot.edits import EditOptions
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.db import Database
from storage.jobs import JobRepository, NewJob
from storage.ledger import EntryKind, LedgerRepository
from storage.store import StoreUrl, open_db
from tests.sql import empty

T = TypeVar("T")

GUILD = 1
# (guild, user); guild 0 is direct messages.
MEMBERS = [(GUILD, 1), (GUILD, 2), (0, 1)]
ROLE_ALLOWANCES = {100: 10, 101: 120}
CREDITS = CreditsSettings(default_allowance=60, period="day", dm_allowance=0)
BUDGET = BudgetSettings(usd_per_day=1.0, usd_per_month=1.2)
# Dearer than the real hosts, so that the owner's caps are reached within a hundred steps.
USD = {"low": 0.04, "medium": 0.09, "high": 0.2}
MOD = 99
# Starts just before a day, week (2026-03-02 is a Monday), month and leap-February boundary,
# and one mid-month, where the monthly budget has time to fill.
STARTS = [
    datetime(2026, 3, 10, 9, 0, tzinfo=UTC),
    datetime(2026, 2, 28, 21, 0, tzinfo=UTC),
    datetime(2026, 5, 31, 23, 30, tzinfo=UTC),
    datetime(2026, 12, 31, 22, 0, tzinfo=UTC),
    datetime(2028, 2, 28, 23, 0, tzinfo=UTC),
]
# Steps run so far (one invariant check after each), against the target for one test run.
STEPS = [0]
TARGET_STEPS = {"sqlite": 10_000, "postgresql": 2_000}
# On PostgreSQL each step is a few dozen network round trips: 2,000 steps take about a minute
# here, the SQLite run's 10,000 about as long.
NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass
class Lot:
    expires_at: datetime
    remaining: int = 0


@dataclass
class Member:
    roles: set[int] = field(default_factory=set)
    # The first lot never expires: grants without expiry, adjustments, revokes, debts.
    lots: list[Lot] = field(default_factory=lambda: [Lot(NEVER)])
    blocked: bool = False

    @property
    def permanent(self) -> Lot:
        return self.lots[0]


@dataclass
class Job:
    member: tuple[int, int]
    credits: int
    images: int
    from_allowance: int
    usd_micros: int
    reserved_at: datetime
    taken: list[tuple[Lot, int]]
    charged: int | None = None
    usd_spent: int = 0


class CreditMachine(RuleBasedStateMachine):
    store_url = "sqlite://:memory:"  # a subclass per backend sets it (hypothesis builds the machine)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db: Database = self.run(open_db(self.store_url))
        self.run(empty(self.db))  # PostgreSQL's database outlives an example
        self.now = STARTS[0]
        self.service = CreditService(self.db, CREDITS, BUDGET, clock=lambda: self.now)
        self.members = {member: Member() for member in MEMBERS}
        self.jobs: dict[int, Job] = {}
        self.period: str = CREDITS.period
        self.server_cap: int | None = None
        self.overrides: dict[int, int] = {}
        self.started = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.db.close())
        self.loop.close()

    # The model

    def bounds(self, guild: int) -> tuple[datetime | None, datetime | None]:
        return period_bounds(self.period if guild == GUILD else CREDITS.period, self.now)

    def allowance(self, member: tuple[int, int]) -> int:
        guild, user = member
        if guild != GUILD:
            return CREDITS.dm_allowance
        if user in self.overrides:
            return self.overrides[user]
        matched = [ROLE_ALLOWANCES[r] for r in self.members[member].roles if r in ROLE_ALLOWANCES]
        return max(matched, default=CREDITS.default_allowance)

    def in_window(self, job: Job, start: datetime | None) -> bool:
        return start is None or job.reserved_at >= start

    def allowance_used(self, member: tuple[int, int]) -> int:
        start, _ = self.bounds(member[0])
        return sum(
            job.from_allowance if job.charged is None else min(job.charged, job.from_allowance)
            for job in self.jobs.values()
            if job.member == member and self.in_window(job, start)
        )

    def bonus(self, member: tuple[int, int]) -> int:
        return sum(lot.remaining for lot in self.members[member].lots if lot.expires_at > self.now)

    def expected_balance(self, member: tuple[int, int]) -> Balance:
        allowance, used, bonus = self.allowance(member), self.allowance_used(member), self.bonus(member)
        _, refills_at = self.bounds(member[0])
        return Balance(
            available=max(0, allowance - used) + bonus,
            reserved=sum(j.credits for j in self.jobs.values() if j.member == member and j.charged is None),
            allowance=allowance,
            allowance_used=used,
            bonus=bonus,
            period=self.period if member[0] == GUILD else CREDITS.period,
            refills_at=refills_at,
        )

    def take(self, member: tuple[int, int], amount: int) -> list[tuple[Lot, int]]:
        """Soonest-expiring live lots first, then the permanent one (which may go negative)."""
        m = self.members[member]
        taken = []
        for lot in sorted(
            (lot for lot in m.lots if lot.expires_at > self.now), key=lambda lot: lot.expires_at
        ):
            use = amount if lot is m.permanent else min(lot.remaining, amount)
            if use:
                lot.remaining -= use
                amount -= use
                taken.append((lot, use))
        return taken

    def committed_credits(self, start: datetime | None) -> int:
        return sum(
            job.credits if job.charged is None else job.charged
            for job in self.jobs.values()
            if job.member[0] == GUILD and self.in_window(job, start)
        )

    def usd_since(self, start: datetime) -> int:
        return sum(
            job.usd_micros if job.charged is None else job.usd_spent
            for job in self.jobs.values()
            if job.reserved_at >= start
        )

    def predict(
        self, member: tuple[int, int], estimate: Estimate
    ) -> tuple[type[CreditError], str | None] | None:
        if self.members[member].blocked:
            return MemberBlocked, None
        if estimate.credits > self.expected_balance(member).available:
            return InsufficientCredits, None
        cap = self.server_cap
        if (
            member[0] == GUILD
            and cap is not None
            and self.committed_credits(self.bounds(GUILD)[0]) + estimate.credits > cap
        ):
            return BudgetExceeded, "server"
        for scope, usd in (("day", BUDGET.usd_per_day), ("month", BUDGET.usd_per_month)):
            start, _ = period_bounds(scope, self.now)
            assert start is not None and usd is not None
            if self.usd_since(start) + estimate.usd_micros > round(usd * 1_000_000):
                return BudgetExceeded, scope
        return None

    def open_jobs(self) -> list[int]:
        return sorted(job_id for job_id, job in self.jobs.items() if job.charged is None)

    def closed_jobs(self) -> list[int]:
        return sorted(job_id for job_id, job in self.jobs.items() if job.charged is not None)

    def give_back(self, job: Job, charged: int) -> None:
        job.charged = charged
        from_bonus = max(0, charged - job.from_allowance)
        for lot, used in job.taken:
            kept = min(used, from_bonus)
            from_bonus -= kept
            lot.remaining += used - kept

    async def ledger_rows(self) -> int:
        row = await self.db.fetch_one("SELECT COUNT(*) FROM ledger")
        assert row is not None
        return int(row[0])

    # Rules

    @initialize(start=st.sampled_from(STARTS))
    def start(self, start: datetime) -> None:
        self.now = start
        for role, amount in ROLE_ALLOWANCES.items():
            self.run(
                self.service.set_allowance(
                    guild_id=GUILD, scope="role", target_id=role, amount=amount, actor_id=MOD
                )
            )
        self.started = True

    @rule(
        member=st.sampled_from(MEMBERS),
        quality=st.sampled_from(["low", "medium", "medium", "high"]),
        resolution=st.sampled_from(["1K", "1K", "2K", "4K"]),
        count=st.integers(1, 4),
    )
    def reserve(self, member: tuple[int, int], quality: str, resolution: str, count: int) -> None:
        estimate = self.service.estimate(
            quality=quality, resolution=resolution, count=count, usd_per_image=USD
        )
        multiplier = CREDITS.resolution_multiplier[resolution]
        assert estimate == Estimate(
            CREDITS.prices[quality] * multiplier * count,
            round(USD[quality] * 1_000_000) * multiplier * count,
            count,
        )
        expected = self.predict(member, estimate)
        guild, user = member
        job = self.run(
            JobRepository(self.db).insert(
                NewJob(
                    guild_id=guild or None,
                    channel_id=5,
                    user_id=user,
                    prompt="p",
                    options=EditOptions(),
                    inputs=[],
                )
            )
        )
        roles = sorted(self.members[member].roles)
        outcome: tuple[type[CreditError], str | None] | None = None
        try:
            self.run(
                self.service.reserve(
                    guild_id=guild, user_id=user, role_ids=roles, job_id=job.id, estimate=estimate
                )
            )
        except CreditError as refused:
            outcome = type(refused), getattr(refused, "scope", None)
        assert outcome == expected
        if outcome is None:
            balance = self.expected_balance(member)
            from_allowance = min(estimate.credits, max(0, balance.allowance - balance.allowance_used))
            permanent_before = self.members[member].permanent.remaining
            taken = self.take(member, estimate.credits - from_allowance)
            # A member's own spending never pushes bonus below zero (or deeper into an admin's debt).
            assert self.members[member].permanent.remaining >= min(0, permanent_before)
            self.jobs[job.id] = Job(
                member, estimate.credits, count, from_allowance, estimate.usd_micros, self.now, taken
            )

    @precondition(lambda self: self.open_jobs())
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.open_jobs()), label="job")
        job = self.jobs[job_id]
        delivered = data.draw(st.integers(0, job.images), label="delivered")
        reported = data.draw(st.none() | st.integers(0, job.usd_micros), label="usd_micros")
        expected = job.credits // job.images * delivered
        assert (
            self.run(self.service.settle(job_id, delivered_images=delivered, usd_micros=reported)) == expected
        )
        entries = self.run(LedgerRepository(self.db).job_entries(job_id))
        amounts = {kind: sum(e.amount for e in entries if e.kind is kind) for kind in EntryKind}
        # reserve + capture + release net to exactly what was delivered.
        assert amounts[EntryKind.RESERVE] == -job.credits
        assert amounts[EntryKind.CAPTURE] == -expected
        assert amounts[EntryKind.RESERVE] + amounts[EntryKind.RELEASE] == -expected
        job.usd_spent = job.usd_micros // job.images * delivered if reported is None else reported
        self.give_back(job, expected)

    @precondition(lambda self: self.open_jobs())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.open_jobs()), label="job")
        job = self.jobs[job_id]
        self.run(self.service.release(job_id, reason="failed"))
        entries = self.run(LedgerRepository(self.db).job_entries(job_id))
        # A failed or cancelled edit costs nothing: the whole hold comes back, nothing is captured.
        assert [(e.kind, e.amount) for e in entries] == [
            (EntryKind.RESERVE, -job.credits),
            (EntryKind.RELEASE, job.credits),
        ]
        self.give_back(job, 0)

    @precondition(lambda self: self.closed_jobs())
    @rule(data=st.data())
    def settle_again(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.closed_jobs()), label="job")
        job = self.jobs[job_id]
        before = self.run(self.ledger_rows())
        delivered = data.draw(st.integers(0, job.images), label="delivered")
        assert self.run(self.service.settle(job_id, delivered_images=delivered)) == job.charged
        self.run(self.service.release(job_id, reason="recovery ran again"))
        self.run(
            self.service.reserve(
                guild_id=job.member[0],
                user_id=job.member[1],
                role_ids=(),
                job_id=job_id,
                estimate=Estimate(job.credits, job.usd_micros, job.images),
            )
        )
        assert self.run(self.ledger_rows()) == before

    @rule(
        member=st.sampled_from(MEMBERS),
        amount=st.integers(1, 40),
        expires_in=st.none() | st.integers(1, 96).map(lambda hours: timedelta(hours=hours)),
    )
    def grant(self, member: tuple[int, int], amount: int, expires_in: timedelta | None) -> None:
        expires_at = None if expires_in is None else self.now + expires_in
        self.run(
            self.service.grant(
                guild_id=member[0],
                user_id=member[1],
                amount=amount,
                actor_id=MOD,
                reason="r",
                expires_at=expires_at,
            )
        )
        m = self.members[member]
        if expires_at is None:
            m.permanent.remaining += amount
        else:
            m.lots.append(Lot(expires_at, amount))

    @rule(member=st.sampled_from(MEMBERS), amount=st.integers(1, 8))
    def revoke(self, member: tuple[int, int], amount: int) -> None:
        self.run(
            self.service.revoke(
                guild_id=member[0], user_id=member[1], amount=amount, actor_id=MOD, reason="r"
            )
        )
        self.take(member, amount)

    @rule(member=st.sampled_from(MEMBERS), amount=st.integers(-6, 15).filter(bool))
    def adjust(self, member: tuple[int, int], amount: int) -> None:
        self.run(
            self.service.adjust(
                guild_id=member[0], user_id=member[1], amount=amount, actor_id=MOD, reason="r"
            )
        )
        if amount > 0:
            self.members[member].permanent.remaining += amount
        else:
            self.take(member, -amount)

    @rule(
        delta=st.one_of(
            st.integers(1, 59).map(lambda n: timedelta(minutes=n)),
            st.integers(1, 30).map(lambda n: timedelta(hours=n)),
            st.integers(1, 9).map(lambda n: timedelta(days=n)),
        )
    )
    def advance_clock(self, delta: timedelta) -> None:
        self.now += delta

    @rule(data=st.data())
    def jump_to_an_edge(self, data: st.DataObject) -> None:
        """Land exactly on a reset or an expiry, where an off-by-one would show."""
        edges = {end for end in (self.bounds(GUILD)[1], self.bounds(0)[1]) if end is not None}
        edges |= {
            lot.expires_at for m in self.members.values() for lot in m.lots[1:] if lot.expires_at > self.now
        }
        self.now = data.draw(st.sampled_from(sorted(edges)), label="edge")

    @rule(user=st.sampled_from([1, 2]), roles=st.sets(st.sampled_from([100, 101, 999])))
    def change_roles(self, user: int, roles: set[int]) -> None:
        self.members[(GUILD, user)].roles = roles

    @rule(user=st.sampled_from([1, 2]), amount=st.none() | st.integers(0, 80))
    def override(self, user: int, amount: int | None) -> None:
        self.run(
            self.service.set_allowance(
                guild_id=GUILD, scope="user", target_id=user, amount=amount, actor_id=MOD
            )
        )
        if amount is None:
            self.overrides.pop(user, None)
        else:
            self.overrides[user] = amount

    @rule(period=st.sampled_from(["day", "week", "month", "none"]))
    def set_period(self, period: str) -> None:
        self.run(self.service.set_period(guild_id=GUILD, period=period, actor_id=MOD))  # type: ignore[arg-type]
        self.period = period

    @rule(amount=st.none() | st.integers(0, 150))
    def set_server_cap(self, amount: int | None) -> None:
        self.run(self.service.set_server_cap(guild_id=GUILD, amount=amount, actor_id=MOD))
        self.server_cap = amount

    @rule(member=st.sampled_from(MEMBERS))
    def toggle_block(self, member: tuple[int, int]) -> None:
        m = self.members[member]
        if m.blocked:
            self.run(self.service.unblock(guild_id=member[0], user_id=member[1], actor_id=MOD))
        else:
            self.run(self.service.block(guild_id=member[0], user_id=member[1], actor_id=MOD, reason="r"))
        m.blocked = not m.blocked
        assert self.run(self.service.is_blocked(*member)) == m.blocked

    # Invariants

    @precondition(lambda self: self.started)
    @invariant()
    def agrees_with_the_model(self) -> None:
        STEPS[0] += 1

        async def snapshot() -> tuple[list[Balance], list[str], list[str], Spend]:
            async with self.db.transaction():  # one consistent read, one BEGIN/COMMIT
                balances = [
                    await self.service.balance(guild, user, sorted(self.members[(guild, user)].roles))
                    for guild, user in MEMBERS
                ]
                problems = await self.service.verify()
                return (
                    balances,
                    problems,
                    await self.service.balance_differences(),
                    await self.service.spend(),
                )

        balances, problems, differences, spend = self.run(snapshot())
        assert problems == []
        # The balances kept beside the ledger are what replaying the ledger gives, at every step.
        assert differences == []
        for member, balance in zip(MEMBERS, balances, strict=True):
            assert balance == self.expected_balance(member), member
            # Negative only through an admin's revoke or adjust (members cannot overdraw, see reserve).
            assert balance.available >= 0 or self.members[member].permanent.remaining < 0
        day_start, _ = period_bounds("day", self.now)
        month_start, _ = period_bounds("month", self.now)
        assert day_start is not None and month_start is not None
        assert (spend.day_usd_micros, spend.month_usd_micros) == (
            self.usd_since(day_start),
            self.usd_since(month_start),
        )
        # Reservations counted before submit: concurrent or not, spend never passes a cap.
        assert (spend.day_cap_micros, spend.month_cap_micros) == (1_000_000, 1_200_000)
        assert spend.day_usd_micros <= 1_000_000
        assert spend.month_usd_micros <= 1_200_000


def test_credits_agree_with_the_model(store_url: str) -> None:
    # Hypothesis ends some examples early (novel prefixes that stop, and mutations of those), so
    # examples × steps is not what runs: batches go on until the steps actually run reach the target.
    dialect = StoreUrl.parse(store_url).dialect

    class OnThisStore(CreditMachine):
        pass

    if dialect == "postgresql":
        OnThisStore.store_url = store_url
    STEPS[0] = 0
    while STEPS[0] < TARGET_STEPS[dialect]:
        run_state_machine_as_test(
            OnThisStore,
            settings=settings(
                max_examples=10,
                stateful_step_count=100,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
