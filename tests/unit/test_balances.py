"""The balances kept beside the ledger: rebuilt for an install that predates them, and never
overspent when several connections (processes, on PostgreSQL) reserve for one member at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.credits import CreditService, Estimate, InsufficientCredits
from bot.edits import EditOptions
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.db import Database, migrations
from storage.jobs import JobRepository, NewJob
from storage.sqlite import MIGRATIONS_DIR, connect
from storage.store import open_db

T0 = datetime(2026, 5, 13, 12, 0, tzinfo=UTC)
G, MOD = 1, 7
SETTINGS = CreditsSettings(default_allowance=30, period="week")


async def _job(db: Database, user_id: int) -> int:
    job = await JobRepository(db).insert(
        NewJob(guild_id=G, channel_id=2, user_id=user_id, prompt="p", options=EditOptions(), inputs=[])
    )
    return job.id


async def _history(service: CreditService, db: Database, clock: list[datetime]) -> None:
    """Allowance, expiring and permanent bonus, a revoke, and jobs settled, released and open,
    across a week's reset: everything the replay has to get right."""
    await service.grant(
        guild_id=G, user_id=1, amount=25, actor_id=MOD, reason="r", expires_at=T0 + timedelta(days=2)
    )
    await service.grant(guild_id=G, user_id=1, amount=10, actor_id=MOD, reason="r")
    await service.grant(
        guild_id=G, user_id=1, amount=6, actor_id=MOD, reason="r", expires_at=T0 + timedelta(days=1)
    )
    for user, credits, images, delivered in [(1, 40, 4, 3), (1, 10, 2, None), (2, 9, 1, 0), (1, 8, 1, -1)]:
        job = await _job(db, user)
        await service.reserve(
            guild_id=G, user_id=user, role_ids=(), job_id=job, estimate=Estimate(credits, 0, images)
        )
        if delivered == -1:
            continue  # left on hold
        if delivered is None:
            await service.release(job, reason="failed")
        else:
            await service.settle(job, delivered_images=delivered)
        clock[0] += timedelta(days=2)
    await service.revoke(guild_id=G, user_id=2, amount=3, actor_id=MOD, reason="r")


async def test_an_install_from_before_kept_balances_gets_them_from_its_ledger(tmp_path: Path) -> None:
    clock = [T0]
    now = lambda: clock[0]  # noqa: E731
    source = await open_db(tmp_path / "now.db")
    before = tmp_path / "before.db"
    conn = connect(before)
    try:
        for migration in migrations(MIGRATIONS_DIR)[:10]:  # the schema before balances were kept
            conn.executescript(migration.path.read_text(encoding="utf-8"))
        service = CreditService(source, SETTINGS, BudgetSettings(), clock=now)
        await _history(service, source, clock)
        await source.close()
        conn.execute(f"ATTACH DATABASE '{tmp_path / 'now.db'}' AS now")
        for table in ("jobs", "ledger", "credit_holds"):
            conn.execute(f"INSERT INTO {table} SELECT * FROM now.{table}")
        conn.execute("DETACH DATABASE now")
    finally:
        conn.close()

    source = await open_db(tmp_path / "now.db")
    migrated = await open_db(before)
    try:
        old = CreditService(migrated, SETTINGS, BudgetSettings(), clock=now)
        new = CreditService(source, SETTINGS, BudgetSettings(), clock=now)
        stale = await migrated.fetch_all(
            "SELECT user_id FROM member_balances WHERE stale = 1 ORDER BY user_id"
        )
        assert [row["user_id"] for row in stale] == [1, 2]
        for user in (1, 2):
            assert await old.balance(G, user) == await new.balance(G, user)
        assert await migrated.fetch_all("SELECT 1 FROM member_balances WHERE stale = 1") == []
        assert await old.balance_differences() == []
        # From here on the rebuilt books move like books that were always kept.
        for service, db in ((old, migrated), (new, source)):
            job = await _job(db, 1)
            await service.reserve(guild_id=G, user_id=1, role_ids=(), job_id=job, estimate=Estimate(20, 0, 2))
            await service.settle(job, delivered_images=1)
            await service.settle(job - 1, delivered_images=1)  # the job left on hold before the copy
        assert await old.balance(G, 1) == await new.balance(G, 1)
        assert await old.balance_differences() == [] and await old.verify() == []
    finally:
        await source.close()
        await migrated.close()


async def test_simultaneous_reservations_from_many_connections_never_overspend(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    dbs = [await open_db(path) for _ in range(4)]
    try:
        services = [CreditService(db, CreditsSettings(default_allowance=100), BudgetSettings()) for db in dbs]
        await services[0].grant(guild_id=G, user_id=1, amount=25, actor_id=MOD, reason="r")
        jobs = [await _job(dbs[0], 1) for _ in range(40)]

        async def attempt(n: int) -> bool:
            try:
                await services[n % 4].reserve(
                    guild_id=G, user_id=1, role_ids=(), job_id=jobs[n], estimate=Estimate(10, 0, 1)
                )
            except InsufficientCredits:
                return False
            return True

        results = await asyncio.gather(*(attempt(n) for n in range(40)))
        assert sum(results) == 12  # 125 credits buy twelve edits of 10, not one more
        balance = await services[1].balance(G, 1)
        assert (balance.available, balance.reserved, balance.bonus) == (5, 120, 5)
        assert await services[2].balance_differences() == [] and await services[3].verify() == []
    finally:
        for db in dbs:
            await db.close()
