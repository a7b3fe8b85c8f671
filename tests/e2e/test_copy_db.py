"""`python -m bot copy-db`: an install moved from SQLite to PostgreSQL and back, row for row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.credits import CreditService, Estimate
from bot.edits import EditOptions
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.bot_settings import BotSettingsRepository
from storage.copy import count, tables
from storage.db import Database
from storage.jobs import JobRepository, JobState, NewJob, NewOutput
from storage.members import MemberPrefs
from storage.paint_links import PaintLinkRepository
from storage.store import open_db
from tests.e2e.test_cli import run_cli
from tests.postgres import PgServer, fresh_database

CREDITS = CreditsSettings(default_allowance=50, period="day")
ENV = {"RETOUCH_DISCORD__TOKEN": "x", "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": "k"}
NOW = datetime.now(UTC)


async def _fill(url: str) -> dict[tuple[int, int], int]:
    """An install with something in every table: jobs built on jobs, outputs, copies of results,
    grants, reservations settled and open, moderation, a painter link, a preference, the owner's
    switch. Returns
    every member's available credits."""
    db = await open_db(url)
    try:
        credits = CreditService(db, CREDITS, BudgetSettings())
        repo = JobRepository(db)
        for n, (guild, user) in enumerate([(1, 10), (1, 11), (2, 10)] * 3):
            job = await repo.insert(
                NewJob(
                    guild_id=guild,
                    channel_id=5,
                    user_id=user,
                    prompt=f"p{n}",
                    options=EditOptions(),
                    inputs=[],
                )
            )
            if n == 4:
                await repo.insert(
                    NewJob(
                        guild_id=guild,
                        channel_id=5,
                        user_id=user,
                        prompt="again",
                        options=EditOptions(),
                        inputs=[],
                        parent_id=job.id,
                        parent_output=0,
                    )
                )
            await credits.reserve(
                guild_id=guild, user_id=user, role_ids=(), job_id=job.id, estimate=Estimate(7, 100_000)
            )
            if n % 3 != 2:  # the rest stay open, holding their credits
                await repo.add_outputs(
                    job.id, [NewOutput(0, None, f"{job.id}/0.png", "image/png", 8, 8, 99, False, True, 0.25)]
                )
                await repo.move(job.id, [JobState.QUEUED], JobState.DONE, completed_at=NOW)
                await credits.settle(job.id, delivered_images=1)
                await repo.add_message(job.id, 5, 9000 + job.id)
        await credits.grant(
            guild_id=1, user_id=11, amount=30, actor_id=1, reason="thanks", expires_at=NOW + timedelta(days=3)
        )
        # Part of this hold comes out of the grant (what the hold took from bonus is kept too).
        bonus = await repo.insert(
            NewJob(guild_id=1, channel_id=5, user_id=11, prompt="big", options=EditOptions(), inputs=[])
        )
        await credits.reserve(
            guild_id=1, user_id=11, role_ids=(), job_id=bonus.id, estimate=Estimate(45, 100_000)
        )
        await credits.set_allowance(guild_id=2, scope="user", target_id=10, amount=80, actor_id=1)
        await credits.block(guild_id=2, user_id=12, actor_id=1, reason="spam")
        await credits.set_period(guild_id=2, period="month", actor_id=1)
        await MemberPrefs(db).set_mentions(10, False, now=NOW)
        await BotSettingsRepository(db).set_paused(True, actor_id=7, now=NOW)  # the owner's switch
        await PaintLinkRepository(db).insert(
            "link",
            user_id=10,
            guild_id=1,
            channel_id=5,
            grant={"job": 1},
            created_at=NOW,
            expires_at=NOW + timedelta(hours=1),
        )
        members = [(1, 10), (1, 11), (2, 10)]
        return {member: (await credits.balance(*member)).available for member in members}
    finally:
        await db.close()


async def _counts(db: Database) -> dict[str, int]:
    return {table: await count(db, table) for table in await tables(db)}


async def test_an_install_moves_to_postgresql_and_back(tmp_path: Path, postgres_server: PgServer) -> None:
    lite = f"sqlite:///{tmp_path / 'retouch.db'}"
    balances = await _fill(lite)
    with fresh_database(postgres_server) as pg:
        code, out, err = await run_cli("copy-db", "--from", lite, "--to", pg, env=ENV, cwd=tmp_path)
        assert code == 0, err
        assert "Verified: every table has the same rows count and every balance is equal." in out
        assert "jobs: 11 rows" in out and "ledger: " in out and "balances of 3 members" in out

        # The copy is a working install: its balances, and new ids after the copied ones.
        db = await open_db(pg)
        try:
            credits = CreditService(db, CREDITS, BudgetSettings())
            assert {m: (await credits.balance(*m)).available for m in balances} == balances
            assert await credits.verify() == []
            job = await JobRepository(db).insert(
                NewJob(guild_id=1, channel_id=5, user_id=10, prompt="after", options=EditOptions(), inputs=[])
            )
            assert job.id == 12
            copied = await _counts(db)
        finally:
            await db.close()
        # Empty in the source too: no command sync was claimed, and a SQLite install journals
        # acknowledged edits in a file, not in `intake_journal`.
        empty = [table for table, rows in copied.items() if rows == 0]
        assert sorted(empty) == ["command_syncs", "intake_journal"], copied

        # A second copy into the same database is refused, and changes nothing.
        code, out, err = await run_cli("copy-db", "--from", lite, "--to", pg, env=ENV, cwd=tmp_path)
        assert code == 1
        assert "Refusing to copy: the target already has rows in" in err
        assert "copy-db needs a new, empty database" in err and "Traceback" not in err

        # And back to a new SQLite file.
        back = f"sqlite:///{tmp_path / 'back.db'}"
        code, out, err = await run_cli("copy-db", "--from", pg, "--to", back, env=ENV, cwd=tmp_path)
        assert code == 0, err
        assert "Verified" in out
    db = await open_db(back)
    try:
        assert await _counts(db) == copied
    finally:
        await db.close()


async def test_an_unreachable_target_is_one_sentence(tmp_path: Path) -> None:
    lite = f"sqlite:///{tmp_path / 'retouch.db'}"
    await _fill(lite)
    code, out, err = await run_cli(
        "copy-db",
        "--from",
        lite,
        "--to",
        "postgresql://retouch:hunter2@127.0.0.1:1/retouch",
        env=ENV,
        cwd=tmp_path,
    )
    assert code == 1
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "Cannot open the PostgreSQL database at postgresql://retouch:***@127.0.0.1:1/retouch" in err
    assert "hunter2" not in err + out
