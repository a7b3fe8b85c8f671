"""The digest that decides whether commands need syncing, and the claim that makes one process
sync them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.runtime.command_sync import CommandSync, digest
from storage.commands import CommandSyncRepository
from storage.db import Database
from storage.store import open_db


def test_the_digest_ignores_key_and_command_order() -> None:
    edit = {"name": "edit", "type": 1, "description": "Edit a picture"}
    menu = {"type": 3, "name": "Edit image"}
    assert digest([edit, menu]) == digest([dict(reversed(list(menu.items()))), edit])


def test_any_change_of_a_definition_changes_the_digest() -> None:
    edit = {"name": "edit", "type": 1, "description": "Edit a picture"}
    assert digest([edit]) != digest([{**edit, "description": "Edit a photo"}])
    assert digest([edit]) != digest([edit, {"name": "show", "type": 1}])


class Discord:
    """Stands in for the bulk overwrite: counts the syncs, and fails the next one on request."""

    def __init__(self) -> None:
        self.syncs = 0
        self.fail_next = False

    async def sync(self) -> None:
        await asyncio.sleep(0)  # another process's claim may land while this one is in flight
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("Discord did not answer")
        self.syncs += 1


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[list[Database]]:
    """Four processes' connections to one database file."""
    path = tmp_path / "retouch.db"
    await (await open_db(path)).close()
    dbs = [await open_db(path) for _ in range(4)]
    yield dbs
    for db in dbs:
        await db.close()


EDIT = [{"name": "edit", "type": 1, "description": "Edit a picture"}]
SCOPE = "1:global"


async def starting_at_once(
    processes: list[Database], definitions: list[dict[str, object]], discord: Discord
) -> list[bool]:
    """Each process's start, all at once: whether it synced."""
    return await asyncio.gather(
        *(
            CommandSync(CommandSyncRepository(db)).sync_if_changed(SCOPE, definitions, discord.sync)
            for db in processes
        )
    )


async def test_processes_starting_at_once_sync_exactly_once(processes: list[Database]) -> None:
    discord = Discord()
    assert sorted(await starting_at_once(processes, EDIT, discord)) == [False, False, False, True]
    assert discord.syncs == 1
    # Later starts with the same definitions sync nothing; changed ones sync once more.
    assert not any(await starting_at_once(processes, EDIT, discord))
    changed = [{**EDIT[0], "description": "Edit a photo"}]
    assert (await starting_at_once(processes, changed, discord)).count(True) == 1
    assert discord.syncs == 2


async def test_a_failed_sync_leaves_no_claim_so_the_next_start_syncs(processes: list[Database]) -> None:
    discord = Discord()
    discord.fail_next = True
    with pytest.raises(ConnectionError):
        await CommandSync(CommandSyncRepository(processes[0])).sync_if_changed(SCOPE, EDIT, discord.sync)
    assert await CommandSync(CommandSyncRepository(processes[1])).sync_if_changed(SCOPE, EDIT, discord.sync)
    assert discord.syncs == 1


async def test_a_failed_sync_keeps_a_newer_claim(processes: list[Database]) -> None:
    repo = CommandSyncRepository(processes[0])
    await repo.claim(SCOPE, "older", now=datetime.now(UTC))
    await CommandSyncRepository(processes[1]).claim(SCOPE, "newer", now=datetime.now(UTC))
    await repo.release(SCOPE, "older")
    assert not await repo.claim(SCOPE, "newer", now=datetime.now(UTC))


async def test_a_forced_sync_runs_even_when_nothing_changed(processes: list[Database]) -> None:
    discord = Discord()
    repo = CommandSyncRepository(processes[0])
    assert await CommandSync(repo).sync_if_changed(SCOPE, EDIT, discord.sync)
    assert await CommandSync(repo, force=True).sync_if_changed(SCOPE, EDIT, discord.sync)
    assert discord.syncs == 2
