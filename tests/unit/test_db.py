"""Schema migrations: applied in order, idempotent, and refusing a newer database."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.db import SchemaTooNew, connect, latest_version, migrate, open_db, schema_version


async def test_fresh_database_gets_every_table(tmp_path: Path) -> None:
    conn = await open_db(tmp_path / "r.db")
    try:
        assert await schema_version(conn) == latest_version()
        async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
            tables = {row[0] for row in await cursor.fetchall()}
        assert {"jobs", "job_outputs", "ledger", "allowances", "guild_settings", "member_blocks"} <= tables
        async with conn.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone())[0] == "wal"
        async with conn.execute("PRAGMA foreign_keys") as cursor:
            assert (await cursor.fetchone())[0] == 1
    finally:
        await conn.close()


async def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    conn = await open_db(tmp_path / "r.db")
    try:
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    conn = await connect(path)
    await conn.execute(f"PRAGMA user_version = {latest_version() + 1}")
    await conn.close()
    with pytest.raises(SchemaTooNew, match="upgrade Retouch"):
        await open_db(path)
