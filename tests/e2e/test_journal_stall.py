"""An edit whose first record cannot be written in time is refused while Discord still takes
an answer, and no process runs it later (on PostgreSQL the record is a row, so a database that
stops answering is the stall to test)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from bot.edits import CannotRecord
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import private_answer
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png


@pytest.fixture
def overrides(pg_url: str) -> dict[str, str]:
    return {"RETOUCH_STORAGE__URL": pg_url}


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_url)
    yield connection
    await connection.close()


@pytest.fixture
def seen_withdrawn() -> Iterator[asyncio.Event]:
    """Set when the bot logs that it withdrew a journal entry that landed late."""
    seen = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "landed after its edit was refused is withdrawn" in record.getMessage():
                seen.set()

    logger = logging.getLogger("bot.jobs.intake")
    watch, level = Watch(), logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    yield seen
    logger.removeHandler(watch)
    logger.setLevel(level)


async def test_a_stalled_journal_gets_a_refusal_in_time_and_leaves_nothing_to_run(
    retouch: InProcessBot,
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    admin: asyncpg.Connection,
    seen_withdrawn: asyncio.Event,
) -> None:
    stall = admin.transaction()
    await stall.start()
    await admin.execute("LOCK TABLE intake_journal IN ACCESS EXCLUSIVE MODE")
    image = discord_fake.add_cdn_file(png(), "a.png")
    interaction = await discord_fake.slash("edit", prompt="brighter", image=image)
    assert await private_answer(interaction) == CannotRecord.message
    assert interaction.responses[0]["status"] == 200  # within Discord's deadline
    await stall.rollback()  # the entry lands now, after the member was told no
    await asyncio.wait_for(seen_withdrawn.wait(), 10)
    assert await admin.fetchval("SELECT COUNT(*) FROM intake_journal") == 0
    assert await admin.fetchval("SELECT COUNT(*) FROM jobs") == 0
    assert runflow.runs == {}
