"""`python -m bot run` under `ulimit -n 256` while a client holds 300 connections that never
finish their request heads: the web server stays answerable and edits are still delivered."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp

from tests.e2e.conftest import BotProcess, env_for
from tests.e2e.helpers import has_image
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png

SIEGE = 300
MAX_OPEN_FILES = 256


async def database_health(port: int) -> str:
    """What /healthz says of the database; its status code also depends on when the gateway
    became ready, which is not what this is about."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        return str((await response.json())["database"])


async def test_healthz_and_deliveries_survive_300_half_open_connections(
    discord_fake: FakeDiscord, runflow: FakeRunflow, tmp_path: Path
) -> None:
    process = BotProcess(
        env_for(discord_fake, runflow, tmp_path), tmp_path / "bot.log", max_open_files=MAX_OPEN_FILES
    )
    await process.start()
    held: list[asyncio.StreamWriter] = []
    try:
        await discord_fake.wait_ready(timeout=30)
        # The web server starts before the bot logs in, so its port is in the log by now.
        found = re.search(r"web server listening on 127\.0\.0\.1:(\d+)", process.log())
        assert found is not None
        port = int(found.group(1))
        assert await database_health(port) == "ok"
        for _ in range(SIEGE):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            held.append(writer)
        await asyncio.gather(*(writer.drain() for writer in held))
        assert await database_health(port) == "ok"
        await discord_fake.slash(
            "edit", prompt="under siege", image=discord_fake.add_cdn_file(png(), "s.png")
        )
        await discord_fake.wait_for_message(has_image, timeout=30)
        assert await database_health(port) == "ok"
    finally:
        for writer in held:
            writer.close()
        assert await process.terminate() == 0
    assert "Too many open files" not in process.log()
