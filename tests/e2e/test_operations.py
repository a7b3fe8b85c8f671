"""What an owner relies on: metrics that count, backups that open, upgrades that keep a copy."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from pathlib import Path

import aiohttp
import pytest

from bot.credits import CreditService
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.db import migrations
from storage.sqlite import MIGRATIONS_DIR, backup, connect, latest_version, open_sqlite
from storage.store import open_db
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import has_image, shows
from tests.e2e.test_cli import run_cli
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png


async def scrape(bot: InProcessBot) -> str:
    assert bot.bot is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bot.bot.web.port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


async def test_metrics_count_edits_credits_and_host_calls(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.fail_runs = {"failure_code": "PROVIDER_ERROR", "failure_message": "no"}
    await discord_fake.slash("edit", prompt="fails", image=discord_fake.add_cdn_file(png(), "a.png"))
    await discord_fake.wait_for_message(shows("❌"))
    assert retouch.bot is not None
    await retouch.bot.jobs.wait_settled(1)
    runflow.fail_runs = None
    await discord_fake.slash("edit", prompt="works", image=discord_fake.add_cdn_file(png(), "b.png"))
    await discord_fake.wait_for_message(has_image)
    await retouch.bot.jobs.wait_settled(2)
    text = await scrape(retouch)
    assert 'retouch_edits_total{host="runflow",state="done"} 1.0' in text
    assert 'retouch_edits_total{host="runflow",state="failed"} 1.0' in text
    assert 'retouch_jobs{state="done"} 1.0' in text
    assert "retouch_credits_spent_total 14.0" in text
    assert "retouch_reservations_open 0.0" in text
    assert 'retouch_host_request_seconds_count{host="runflow",operation="submit"} 2.0' in text


@pytest.mark.sqlite_only
async def test_a_backup_taken_during_a_burst_is_consistent(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow, tmp_path: Path
) -> None:
    runflow.hold = True
    members = [discord_fake.add_member(f"m{n}") for n in range(8)]
    for member in members:
        await discord_fake.slash(
            "edit", user=member, prompt="burst", image=discord_fake.add_cdn_file(png(), "p.png")
        )
    await runflow.wait_for_run(count=len(members))
    copy = await asyncio.to_thread(backup, retouch.settings.storage.path, tmp_path / "copies")
    runflow.release()
    restored = await open_sqlite(copy)
    try:
        integrity = await restored.fetch_one("PRAGMA integrity_check")
        assert integrity is not None and integrity[0] == "ok"
        jobs = await restored.fetch_one("SELECT COUNT(*) FROM jobs")
        assert jobs is not None and jobs[0] == len(members)
        credits = CreditService(restored, CreditsSettings(), BudgetSettings())
        assert await credits.verify() == []
    finally:
        await restored.close()


async def test_backup_command_writes_a_copy(tmp_path: Path) -> None:
    database = tmp_path / "r.db"
    db = await open_sqlite(database)
    await db.close()
    env = {
        "RETOUCH_DISCORD__TOKEN": "x",
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": "y",
        "RETOUCH_STORAGE__PATH": str(database),
    }
    code, out, err = await run_cli("backup", str(tmp_path / "saved.db"), env=env, cwd=tmp_path)
    assert code == 0, err
    assert "Backed up" in out
    with sqlite3.connect(tmp_path / "saved.db") as copy:
        assert copy.execute("PRAGMA user_version").fetchone() == (latest_version(),)


async def test_backup_command_on_postgresql_runs_pg_dump(tmp_path: Path, pg_url: str) -> None:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump and pg_restore are not installed here")
    db = await open_db(pg_url)
    await db.close()
    env = {
        "RETOUCH_DISCORD__TOKEN": "x",
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": "y",
        "RETOUCH_STORAGE__URL": pg_url,
    }
    code, out, err = await run_cli("backup", str(tmp_path), env=env, cwd=tmp_path)
    assert code == 0, err
    dump, listing = await asyncio.to_thread(_restore_listing, tmp_path)
    assert f"Backed up {pg_url} to {dump}." in out
    assert "TABLE public ledger" in listing and "TRIGGER public ledger ledger_append_only" in listing


def _restore_listing(folder: Path) -> tuple[Path, str]:
    """The one dump written in `folder`, and what pg_restore finds in it."""
    [dump] = folder.glob("retouch-*.dump")
    listing = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True)
    return dump, listing.stdout


async def test_upgrading_an_older_database_keeps_a_copy_first(tmp_path: Path) -> None:
    database = tmp_path / "r.db"
    conn = connect(database)
    conn.executescript(migrations(MIGRATIONS_DIR)[0].path.read_text())
    conn.close()
    env = {
        "RETOUCH_DISCORD__TOKEN": "x",
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": "y",
        "RETOUCH_STORAGE__PATH": str(database),
    }
    code, out, _ = await run_cli("migrate", env=env, cwd=tmp_path)
    assert code == 0 and "Backed up the database" in out
    with sqlite3.connect(tmp_path / f"r.pre-v{latest_version()}.db") as copy:
        assert copy.execute("PRAGMA user_version").fetchone() == (1,)
