"""The PostgreSQL backend's own parts: placeholders, locks, errors, and a schema that stays SQLite's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from storage.db import StoreUnavailable
from storage.postgres import PostgresDatabase, numbered
from storage.sqlite import SqliteDatabase
from storage.store import StoreUrl, open_db
from tests.postgres import PgServer, free_port


def test_placeholders_are_numbered_outside_quotes_and_comments() -> None:
    sql = """SELECT '?', "a?b", ? -- what?
    /* why? */ FROM t WHERE x = ? AND y = 'it''s ?' AND z IN (?, ?)"""
    assert numbered(sql) == (
        """SELECT '?', "a?b", $1 -- what?
    /* why? */ FROM t WHERE x = $2 AND y = 'it''s ?' AND z IN ($3, $4)"""
    )
    assert numbered("SELECT 1") == "SELECT 1"


def test_a_printed_url_hides_its_password() -> None:
    url = StoreUrl.parse("postgresql://retouch:s3cret@db.internal:5432/retouch")
    assert str(url) == "postgresql://retouch:***@db.internal:5432/retouch"
    assert "s3cret" in url.target  # the real one is still what connects
    assert str(StoreUrl.parse("postgresql://postgres@127.0.0.1/x")) == "postgresql://postgres@127.0.0.1/x"
    assert str(StoreUrl.parse("sqlite:///data/retouch.db")) == "sqlite:///data/retouch.db"
    with pytest.raises(ValueError, match="use sqlite:/// or postgresql://"):
        StoreUrl.parse("mysql://root@127.0.0.1/retouch")


async def test_nobody_listening_is_one_clear_sentence() -> None:
    port = free_port()
    with pytest.raises(StoreUnavailable, match=r"nothing answered there \(is PostgreSQL running"):
        await open_db(f"postgresql://retouch:pw@127.0.0.1:{port}/retouch")


async def test_a_missing_database_is_named(postgres_server: PgServer) -> None:
    with pytest.raises(StoreUnavailable, match="that database does not exist") as refused:
        await open_db(postgres_server.url("retouch_never_created"))
    assert str(refused.value).count("\n") == 0


async def test_a_lock_makes_the_second_transaction_wait_for_the_first(pg_url: str) -> None:
    db = await open_db(pg_url)
    assert isinstance(db, PostgresDatabase)
    order: list[str] = []
    first_holds, first_may_end = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with db.transaction() as tx:
            await tx.lock("member:1")
            first_holds.set()
            await first_may_end.wait()
            order.append("first ends")

    async def second() -> None:
        await first_holds.wait()
        async with db.transaction() as tx:
            await tx.lock("member:1")
            order.append("second holds")

    async def waiting() -> int:
        row = await db.fetch_one("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        assert row is not None
        return int(row[0])

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    try:
        async with asyncio.timeout(10):
            while await waiting() == 0:  # noqa: ASYNC110 (the second is queued behind the first's lock: polled in PostgreSQL)
                await asyncio.sleep(0.01)
        assert order == []
        first_may_end.set()
        await asyncio.gather(*tasks)
        assert order == ["first ends", "second holds"]
        # A different key never waits.
        async with db.transaction() as tx, db.transaction() as joined:
            assert joined is tx
            await tx.lock("member:2")
    finally:
        first_may_end.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await db.close()


def _family(declared: str) -> str:
    declared = declared.lower()
    if "int" in declared:
        return "integer"
    if declared in ("real", "double precision"):
        return "real"
    return declared


async def test_both_migration_series_make_the_same_tables_and_columns(tmp_path: Path, pg_url: str) -> None:
    """Each series is written by hand; this keeps them from drifting apart."""
    lite, pg = await open_db(tmp_path / "r.db"), await open_db(pg_url)
    assert isinstance(lite, SqliteDatabase) and isinstance(pg, PostgresDatabase)
    try:
        lite_rows = await lite.fetch_all(
            'SELECT m.name AS t, p.name AS c, p.type AS type, p."notnull" + p.pk AS required'
            " FROM sqlite_master m, pragma_table_info(m.name) p"
            " WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'"
        )
        pg_rows = await pg.fetch_all(
            "SELECT table_name AS t, column_name AS c, data_type AS type, is_nullable AS nullable"
            " FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_version'"
        )
        sqlite_schema = {(r["t"], r["c"], _family(r["type"]), r["required"] > 0) for r in lite_rows}
        pg_schema = {(r["t"], r["c"], _family(r["type"]), r["nullable"] == "NO") for r in pg_rows}
        assert len(sqlite_schema) > 80
        assert sqlite_schema == pg_schema
    finally:
        await lite.close()
        await pg.close()


async def test_a_connection_goes_back_to_the_pool_without_a_reset_round_trip(pg_url: str) -> None:
    """asyncpg's default reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) was a
    round trip on every release, about half of an edit's round trips; the store leaves no session
    state behind, so a transaction's last word to the server is its COMMIT."""
    db = await open_db(pg_url)
    assert isinstance(db, PostgresDatabase)
    try:
        for _ in range(3):
            async with db.transaction() as tx:
                await tx.execute("UPDATE schema_version SET applied_at = applied_at")
        admin = await asyncpg.connect(pg_url)
        try:
            last = await admin.fetch(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND query <> '' AND query NOT LIKE 'LISTEN%'"
            )
        finally:
            await admin.close()
        assert [row["query"] for row in last] == ["COMMIT;"]
    finally:
        await db.close()
