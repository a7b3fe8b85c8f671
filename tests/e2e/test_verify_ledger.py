"""`python -m bot verify-ledger` on a real database file: quiet when the books add up, and naming
the member and the figure when a kept balance or the ledger itself was tampered with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.credits import CreditService, Estimate
from bot.edits import EditOptions
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.jobs import JobRepository, NewJob
from storage.store import open_db
from tests.e2e.test_cli import run_cli

G, U = 7, 42


async def _books(path: Path) -> None:
    """A member with an allowance, an expiring grant, one settled job and one still on hold."""
    db = await open_db(path)
    try:
        service = CreditService(db, CreditsSettings(default_allowance=20), BudgetSettings())
        await service.grant(
            guild_id=G,
            user_id=U,
            amount=30,
            actor_id=1,
            reason="welcome",
            expires_at=datetime.now(UTC) + timedelta(days=3),
        )
        jobs = JobRepository(db)
        for images in (2, 3):
            job = await jobs.insert(
                NewJob(guild_id=G, channel_id=2, user_id=U, prompt="p", options=EditOptions(), inputs=[])
            )
            await service.reserve(
                guild_id=G, user_id=U, role_ids=(), job_id=job.id, estimate=Estimate(8 * images, 0, images)
            )
        await service.settle(job.id - 1, delivered_images=1)
    finally:
        await db.close()


async def _sql(path: Path, sql: str) -> None:
    db = await open_db(path)
    try:
        async with db.transaction() as tx:
            await tx.execute(sql)
    finally:
        await db.close()


async def test_verify_ledger_reports_a_tampered_balance_and_a_forged_entry(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    env = {
        "RETOUCH_DISCORD__TOKEN": "x",
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": "y",
        "RETOUCH_STORAGE__PATH": str(path),
    }
    await _books(path)
    code, out, err = await run_cli("verify-ledger", env=env, cwd=tmp_path)
    assert (code, err) == (0, ""), err
    assert "adds up" in out

    await _sql(path, f"UPDATE member_balances SET reserved = reserved + 5 WHERE user_id = {U}")
    code, out, err = await run_cli("verify-ledger", env=env, cwd=tmp_path)
    assert code == 1
    assert f"member {U} in {G}: the credits on hold is 29 in the balances but 24 in the ledger" in out
    assert "1 problem(s)" in err and "Traceback" not in err

    await _sql(
        path,
        "INSERT INTO ledger (guild_id, user_id, kind, amount, idempotency_key, created_at) "
        f"VALUES ({G}, {U}, 'grant', 9, 'forged', '2026-01-01T00:00:00.000000+00:00')",
    )
    code, out, err = await run_cli("verify-ledger", env=env, cwd=tmp_path)
    assert code == 1
    assert f"member {U} in {G}: the permanent bonus is 0 in the balances but 9 in the ledger" in out
    assert "2 problem(s)" in err


async def test_verify_ledger_without_a_database_says_so(tmp_path: Path) -> None:
    env = {
        "RETOUCH_DISCORD__TOKEN": "x",
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": "y",
        "RETOUCH_STORAGE__PATH": str(tmp_path / "none.db"),
    }
    code, _, err = await run_cli("verify-ledger", env=env, cwd=tmp_path)
    assert code == 1 and "There is no database" in err and not (tmp_path / "none.db").exists()
