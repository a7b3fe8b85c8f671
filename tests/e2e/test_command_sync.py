"""Slash commands are synced when their definitions change, not on every start: Discord limits
how many commands an application may create a day."""

from __future__ import annotations

from storage.store import open_db
from tests.e2e.conftest import InProcessBot
from tests.fakes.discord import FakeDiscord
from tests.sql import run_sql


def command_puts(fake: FakeDiscord) -> int:
    return sum(
        1
        for r in fake.requests
        if r.method == "PUT" and r.path.endswith(f"/applications/{fake.app_id}/commands")
    )


async def test_a_restart_with_the_same_commands_does_not_sync_again(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    assert command_puts(discord_fake) == 1
    await retouch.restart()
    assert command_puts(discord_fake) == 1
    assert "edit" in discord_fake.commands  # still there from the first sync


async def test_changed_definitions_are_synced_at_the_next_start(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    await retouch.stop()
    db = await open_db(retouch.settings.storage.store)
    try:
        await run_sql(db, "UPDATE command_syncs SET digest = 'definitions of an older version'")
    finally:
        await db.close()
    await retouch.start()
    assert command_puts(discord_fake) == 2
