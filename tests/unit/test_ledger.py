"""The credits repositories on each backend (the `db` fixture): what they store and what they refuse."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bot.edits import EditOptions
from storage.balances import BalanceRepository, BonusLot, Change, PeriodUse, Standing
from storage.db import Database, Row, database_errors, ts
from storage.jobs import JobRepository, NewJob
from storage.ledger import EntryKind, Hold, LedgerRepository, NewEntry
from storage.member_credits import MemberAllowances, MemberCreditsRepository
from storage.quotas import GuildCredits, QuotaRepository
from tests.sql import run_sql

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


async def new_job(db: Database, user_id: int = 10, guild_id: int = 1) -> int:
    job = await JobRepository(db).insert(
        NewJob(guild_id=guild_id, channel_id=2, user_id=user_id, prompt="p", options=EditOptions(), inputs=[])
    )
    return job.id


def entry(
    kind: EntryKind,
    amount: int,
    key: str,
    *,
    at: datetime = T0,
    user_id: int = 10,
    job_id: int | None = None,
    actor_id: int | None = None,
    reason: str | None = None,
    expires_at: datetime | None = None,
) -> NewEntry:
    return NewEntry(1, user_id, kind, amount, key, at, job_id, actor_id, reason, expires_at)


async def rows(db: Database, sql: str) -> list[Row]:
    return await db.fetch_all(sql)


async def test_the_same_key_applies_once(db: Database) -> None:
    ledger = LedgerRepository(db)
    assert await ledger.append(entry(EntryKind.GRANT, 5, "grant:a", actor_id=7, reason="welcome"))
    assert not await ledger.append(entry(EntryKind.GRANT, 500, "grant:a", actor_id=7, reason="retried"))
    [only], _ = await ledger.member_ledger(1, 10)
    assert (only.kind, only.amount, only.actor_id, only.reason) == (EntryKind.GRANT, 5, 7, "welcome")
    assert only.created_at == T0


async def test_every_kind_round_trips(db: Database) -> None:
    ledger = LedgerRepository(db)
    job = await new_job(db)
    expires = T0 + timedelta(days=3)
    await ledger.append(entry(EntryKind.GRANT, 5, "g", expires_at=expires))
    await ledger.append(entry(EntryKind.REVOKE, -1, "v"))
    await ledger.append(entry(EntryKind.ADJUST, 2, "a"))
    await ledger.append(entry(EntryKind.RESERVE, -8, "r", job_id=job))
    await ledger.append(entry(EntryKind.CAPTURE, -4, "c", job_id=job))
    await ledger.append(entry(EntryKind.RELEASE, 4, "l", job_id=job))
    found, _ = await ledger.member_ledger(1, 10)
    assert [(e.kind, e.amount) for e in found] == [
        (EntryKind.GRANT, 5),
        (EntryKind.REVOKE, -1),
        (EntryKind.ADJUST, 2),
        (EntryKind.RESERVE, -8),
        (EntryKind.CAPTURE, -4),
        (EntryKind.RELEASE, 4),
    ]
    assert found[0].expires_at == expires
    assert [e.kind for e in await ledger.job_entries(job)] == [
        EntryKind.RESERVE,
        EntryKind.CAPTURE,
        EntryKind.RELEASE,
    ]


async def test_the_ledger_and_holds_cannot_be_rewritten(db: Database) -> None:
    ledger = LedgerRepository(db)
    job = await new_job(db)
    await ledger.append(entry(EntryKind.RESERVE, -8, "r", job_id=job))
    await ledger.add_hold(Hold(job, images=2, from_allowance=8, usd_micros=0))
    for sql in (
        "UPDATE ledger SET amount = 0",
        "DELETE FROM ledger",
        "UPDATE credit_holds SET from_allowance = 0",
        "DELETE FROM credit_holds",
    ):
        with pytest.raises(database_errors(), match="append-only"):
            async with db.transaction() as tx:
                await tx.execute(sql)
    assert (await ledger.job_books(job))[1] == Hold(job, 2, 8, 0)


async def test_history_is_newest_first_and_pages(db: Database) -> None:
    ledger = LedgerRepository(db)
    for n in range(5):
        await ledger.append(entry(EntryKind.GRANT, n + 1, f"g{n}", at=T0 + timedelta(minutes=n)))
    await ledger.append(entry(EntryKind.GRANT, 99, "other", user_id=11))
    assert [e.amount for e in await ledger.history(1, 10, limit=2, offset=0)] == [5, 4]
    assert [e.amount for e in await ledger.history(1, 10, limit=2, offset=2)] == [3, 2]
    assert [e.amount for e in await ledger.history(1, 10, limit=10, offset=4)] == [1]


async def test_committed_credits_count_holds_while_open_and_charges_once_settled(db: Database) -> None:
    ledger = LedgerRepository(db)
    open_job, settled_job, failed_job, old_job = [await new_job(db) for _ in range(4)]
    await ledger.append(entry(EntryKind.RESERVE, -8, "r1", job_id=open_job))
    await ledger.append(entry(EntryKind.RESERVE, -8, "r2", job_id=settled_job))
    await ledger.append(entry(EntryKind.CAPTURE, -4, "c2", job_id=settled_job))
    await ledger.append(entry(EntryKind.RELEASE, 4, "l2", job_id=settled_job))
    await ledger.append(entry(EntryKind.RESERVE, -8, "r3", job_id=failed_job))
    await ledger.append(entry(EntryKind.RELEASE, 8, "l3", job_id=failed_job))
    await ledger.append(entry(EntryKind.RESERVE, -8, "r4", job_id=old_job, at=T0 - timedelta(days=1)))
    assert await ledger.committed_credits(1, T0) == 8 + 4
    assert await ledger.committed_credits(1, None) == 8 + 4 + 8
    assert await ledger.committed_credits(2, None) == 0


async def test_committed_usd_uses_the_hold_until_settled_then_the_job(db: Database) -> None:
    ledger = LedgerRepository(db)
    open_job, settled_job = await new_job(db), await new_job(db, guild_id=2)
    for job in (open_job, settled_job):
        await ledger.append(entry(EntryKind.RESERVE, -8, f"r{job}", job_id=job))
        await ledger.add_hold(Hold(job, images=2, from_allowance=8, usd_micros=300))
    await ledger.append(entry(EntryKind.CAPTURE, -8, "c", job_id=settled_job))
    await ledger.record_settlement(settled_job, credits=8, usd_micros=120)
    assert await ledger.committed_usd(T0, T0 + timedelta(seconds=1), T0 - timedelta(days=1)) == [420, 0, 420]
    assert await ledger.committed_usd() == []
    [job_row] = await rows(db, f"SELECT * FROM jobs WHERE id = {settled_job}")
    assert (job_row["credits_charged"], job_row["usd_micros"]) == (8, 120)


async def test_a_members_ledger_comes_with_their_holds_only(db: Database) -> None:
    ledger = LedgerRepository(db)
    mine, theirs = await new_job(db), await new_job(db, user_id=11)
    await ledger.append(entry(EntryKind.RESERVE, -4, "r1", job_id=mine))
    await ledger.append(entry(EntryKind.RESERVE, -4, "r2", job_id=theirs, user_id=11))
    await ledger.add_hold(Hold(mine, 1, 4, 0))
    await ledger.add_hold(Hold(theirs, 1, 0, 0))
    entries, holds = await ledger.member_ledger(1, 10)
    assert [e.job_id for e in entries] == [mine]
    assert holds == {mine: Hold(mine, 1, 4, 0)}
    assert set(await ledger.all_holds()) == {mine, theirs}


async def test_usage_totals_per_member_for_jobs_settled_since(db: Database) -> None:
    ledger = LedgerRepository(db)
    a1, a2, b1, late = [await new_job(db, user_id=u) for u in (10, 10, 11, 12)]
    for job, user in ((a1, 10), (a2, 10), (b1, 11), (late, 12)):
        await ledger.append(entry(EntryKind.RESERVE, -8, f"r{job}", job_id=job, user_id=user))
    await ledger.append(entry(EntryKind.CAPTURE, -8, "c1", job_id=a1))
    await ledger.record_settlement(a1, credits=8, usd_micros=100)
    await ledger.append(entry(EntryKind.RELEASE, 8, "l2", job_id=a2))
    await ledger.append(entry(EntryKind.CAPTURE, -4, "c3", job_id=b1, user_id=11))
    await ledger.append(entry(EntryKind.RELEASE, 4, "l3", job_id=b1, user_id=11))
    await ledger.record_settlement(b1, credits=4, usd_micros=50)
    usage = await ledger.usage(1, T0)
    assert [(u.user_id, u.credits, u.edits, u.usd_micros) for u in usage] == [(10, 8, 1, 100), (11, 4, 1, 50)]
    assert await ledger.usage(1, T0 + timedelta(seconds=1)) == []


async def test_timestamps_compare_as_instants() -> None:
    later = T0.replace(microsecond=1)
    assert ts(T0) < ts(later)
    assert ts(datetime(2026, 5, 4, 14, 0, tzinfo=timezone(timedelta(hours=2)))) == ts(T0)
    assert len(ts(T0)) == len(ts(later))


async def test_allowances_set_replace_and_remove(db: Database) -> None:
    quotas = QuotaRepository(db)
    await quotas.set_allowance(1, "default", 0, 30, actor_id=7, now=T0)
    await quotas.set_allowance(1, "role", 100, 10, actor_id=7, now=T0)
    await quotas.set_allowance(1, "role", 101, 60, actor_id=7, now=T0)
    await quotas.set_allowance(1, "user", 10, 5, actor_id=7, now=T0)
    await quotas.set_allowance(1, "user", 10, 6, actor_id=7, now=T0)
    await quotas.set_allowance(2, "default", 0, 99, actor_id=7, now=T0)
    everything = await quotas.allowances(1)
    assert (everything.default, dict(everything.roles), dict(everything.users)) == (
        30,
        {100: 10, 101: 60},
        {10: 6},
    )
    members = MemberCreditsRepository(db)

    async def allowances(user_id: int, roles: list[int], guild_id: int = 1) -> MemberAllowances:
        return (await members.read(guild_id, user_id, roles, T0)).allowances

    assert await allowances(11, [100]) == MemberAllowances(user=None, best_role=10, default=30)
    assert await allowances(11, [100, 101, 555]) == MemberAllowances(user=None, best_role=60, default=30)
    assert await allowances(11, []) == MemberAllowances(user=None, best_role=None, default=30)
    assert await allowances(10, [101]) == MemberAllowances(user=6, best_role=60, default=30)
    assert await allowances(10, [100], guild_id=2) == MemberAllowances(user=None, best_role=None, default=99)
    await quotas.set_allowance(1, "user", 10, None, actor_id=7, now=T0)
    assert dict((await quotas.allowances(1)).users) == {}


async def test_credit_settings_leave_other_keys_alone(db: Database) -> None:
    quotas = QuotaRepository(db)
    assert (await quotas.guild_credits(1)).period is None
    await run_sql(
        db,
        "INSERT INTO guild_settings (guild_id, settings, updated_at) VALUES (1, ?, ?)",
        (json.dumps({"locale": "de"}), ts(T0)),
    )
    await quotas.set_guild_credit(1, "credit_period", "week", actor_id=7, now=T0)
    await quotas.set_guild_credit(1, "credit_server_cap", 500, actor_id=7, now=T0)
    settings = await quotas.guild_credits(1)
    assert (settings.period, settings.server_cap) == ("week", 500)
    await quotas.set_guild_credit(1, "credit_server_cap", None, actor_id=7, now=T0)
    assert (await quotas.guild_credits(1)).server_cap is None
    [row] = await rows(db, "SELECT settings, updated_by FROM guild_settings WHERE guild_id = 1")
    assert json.loads(row["settings"]) == {"locale": "de", "credit_period": "week"}
    assert row["updated_by"] == 7


async def test_blocks_and_audit(db: Database) -> None:
    quotas = QuotaRepository(db)
    assert await quotas.block(1, 10, actor_id=7, reason="spam", now=T0)
    assert not await quotas.block(1, 10, actor_id=8, reason="again", now=T0)
    assert await quotas.is_blocked(1, 10)
    assert not await quotas.is_blocked(2, 10)
    assert await quotas.unblock(1, 10)
    assert not await quotas.unblock(1, 10)
    assert not await quotas.is_blocked(1, 10)
    await quotas.audit(1, actor_id=7, action="block", target_id=10, detail={"reason": "spam"}, now=T0)
    [row] = await rows(db, "SELECT * FROM audit_log")
    assert (row["guild_id"], row["actor_id"], row["action"], row["target_id"]) == (1, 7, "block", 10)
    assert json.loads(row["detail"]) == {"reason": "spam"}
    assert row["created_at"] == ts(T0)


async def test_a_members_credit_state_is_read_whole(db: Database) -> None:
    """What a reservation decides from, in the one read (`storage.member_credits`)."""
    members, quotas, balances = MemberCreditsRepository(db), QuotaRepository(db), BalanceRepository(db)
    fresh = await members.read(1, 10, [], T0, job_id=None)
    assert (fresh.held, fresh.blocked, fresh.settings) == (False, False, GuildCredits(None, None))
    assert fresh.standing == Standing()

    job = await new_job(db)
    await LedgerRepository(db).add_hold(Hold(job, images=1, from_allowance=4, usd_micros=0))
    await quotas.block(1, 10, actor_id=7, reason="spam", now=T0)
    await quotas.set_guild_credit(1, "credit_period", "week", actor_id=7, now=T0)
    await balances.apply(1, 10, Change(permanent=3, reserved=4, used=4, starts={"day": T0}))
    await balances.add_lot(
        1, 10, BonusLot(grant_id=await grant_id(db), expires_at=T0 + timedelta(days=1), remaining=5)
    )
    state = await members.read(1, 10, [], T0, job_id=job)
    assert (state.held, state.blocked, state.settings) == (True, True, GuildCredits("week", None))
    assert (state.standing.permanent, state.standing.reserved, state.standing.all_used) == (3, 4, 4)
    assert state.standing.periods["day"] == PeriodUse(ts(T0), 4)
    assert state.standing.lot_bonus == 5
    assert (await members.read(1, 10, [], T0 + timedelta(days=2))).standing.lot_bonus == 0  # expired
    other = await members.read(1, 11, [], T0, job_id=job + 1)
    assert (other.held, other.blocked, other.standing) == (False, False, Standing())


async def grant_id(db: Database) -> int:
    entry_id = await LedgerRepository(db).append(
        entry(EntryKind.GRANT, 5, "lot", expires_at=T0 + timedelta(days=1))
    )
    assert entry_id is not None
    return entry_id
