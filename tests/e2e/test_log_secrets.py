"""`python -m bot run` at log level DEBUG, with discord.py's own loggers talking: no interaction
token, bot token or host key reaches the log, whichever logger or exception carries it."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.conftest import BotProcess, env_for
from tests.e2e.helpers import has_image
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png


async def test_debug_logs_never_show_interaction_tokens_or_secrets(
    discord_fake: FakeDiscord, runflow: FakeRunflow, tmp_path: Path
) -> None:
    env = env_for(discord_fake, runflow, tmp_path, {"RETOUCH_LOG__LEVEL": "DEBUG"})
    process = BotProcess(env, tmp_path / "bot.log")
    await process.start()
    try:
        await discord_fake.wait_ready(timeout=30)
        edit = await discord_fake.slash(
            "edit", prompt="fine", image=discord_fake.add_cdn_file(png(), "a.png")
        )
        await discord_fake.wait_for_message(has_image, timeout=30)
        # A host whose error text quotes the key it was sent, and Discord's token with it.
        runflow.fail_runs = {
            "failure_code": "UNAUTHORIZED",
            "failure_message": f"key {runflow.api_key} is not valid for bot {discord_fake.token}",
        }
        failing = await discord_fake.slash(
            "edit", prompt="fails", image=discord_fake.add_cdn_file(png(), "b.png")
        )
        await discord_fake.wait_for_message(lambda m: "❌" in m.get("content", ""), timeout=30)
    finally:
        assert await process.terminate(signal.SIGTERM) == 0
    log = process.log()
    # discord.py's webhook logger really wrote the interactions' URLs, at DEBUG.
    assert "discord.webhook.async_" in log and "has returned status code" in log
    for secret in (edit.token, failing.token, discord_fake.token, runflow.api_key):
        assert secret not in log, f"{secret[:12]}... is in the log"
    assert f"/webhooks/{discord_fake.app_id}/[redacted]" in log
