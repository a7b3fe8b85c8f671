"""The bot wired to loopback fakes: in this process, or as a real `python -m bot` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import discord
import pytest

from bot.runtime.config import Settings
from cogs.app import Retouch, build_bot
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.postgres import bot_store_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_shards() -> int:
    """The shard count the fake Discord recommends; a module overrides it to test sharding."""
    return 1


@pytest.fixture
async def discord_fake(fake_shards: int) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord(shards=fake_shards)
    await fake.start()
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield fake
    # The bot points these process-wide attributes at the fake; put Discord back for the next test.
    discord.http.Route.BASE = base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
    await fake.close()


def env_for(
    fake: FakeDiscord, runflow: FakeRunflow, data: Path, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The configuration as environment variables, the way an operator would override it.
    With RETOUCH_TEST_STORE=postgresql the store is this test's PostgreSQL database."""
    store = bot_store_url()
    return {
        "RETOUCH_DISCORD__TOKEN": fake.token,
        "RETOUCH_DISCORD__API_BASE": fake.api_base,
        "RETOUCH_DISCORD__GATEWAY_URL": fake.gateway_url,
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": runflow.api_key,
        "RETOUCH_PROVIDERS__RUNFLOW__BASE_URL": runflow.base_url,
        "RETOUCH_PROVIDERS__POLL_INTERVAL": "0.05",
        "RETOUCH_PROVIDERS__POLL_INTERVAL_MAX": "0.2",
        "RETOUCH_STORAGE__PATH": str(data / "retouch.db"),
        "RETOUCH_STORAGE__FILES_DIR": str(data / "files"),
        "RETOUCH_WEB__PORT": "0",
        "RETOUCH_DISCORD__CDN_HOSTS": '["127.0.0.1"]',
        "RETOUCH_LOG__LEVEL": "INFO",
        # Enough that tests about something else never stop to confirm a cost.
        "RETOUCH_CREDITS__DEFAULT_ALLOWANCE": "1000",
        "RETOUCH_CREDITS__CONFIRM_ABOVE": "1000",
        **({"RETOUCH_STORAGE__URL": store} if store is not None else {}),
        **(overrides or {}),
    }


def settings_for(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from the environment exactly as `python -m bot` would read them."""
    for name in [name for name in os.environ if name.startswith("RETOUCH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


class InProcessBot:
    """A Retouch bot in the test's event loop; `restart()` swaps in a brand-new instance."""

    def __init__(self, fake: FakeDiscord, settings: Settings) -> None:
        self.fake = fake
        self.settings = settings
        self.bot: Retouch | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Retouch:
        bot = build_bot(self.settings, guild_ready_timeout=0.1)
        self.bot = bot
        self._task = asyncio.create_task(bot.start(self.settings.discord.token.get_secret_value()))
        ready = asyncio.create_task(self.fake.wait_ready(timeout=15, shards=self._shards()))
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            ready.cancel()
            self._task.result()
            raise AssertionError("the bot stopped before it was ready")
        await ready
        async with asyncio.timeout(10):
            await bot.wait_until_ready()
        return bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.bot = None
        self._task = None
        await self.fake.wait_disconnected(shards=self._shards())

    def _shards(self) -> list[int] | None:
        """The gateway shards this bot runs; None (every one) when it runs them all."""
        count, ids = self.settings.discord.shard_count, self.settings.discord.shard_ids
        return ids if ids is not None else (list(range(count)) if count is not None else None)

    async def restart(self) -> Retouch:
        await self.stop()
        return await self.start()


@pytest.fixture
def overrides() -> dict[str, str]:
    """Extra RETOUCH_* settings for one test: `@pytest.mark.parametrize("overrides", [...])`."""
    return {}


@pytest.fixture
async def retouch(
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    tmp_path: Path,
    overrides: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[InProcessBot]:
    env = env_for(discord_fake, runflow, tmp_path, overrides)
    runner = InProcessBot(discord_fake, settings_for(env, monkeypatch))
    await runner.start()
    yield runner
    await runner.stop()


class BotProcess:
    """`python -m bot` as a child process, configured only through its environment
    (and, with `max_open_files`, under that `ulimit -n`; with `launcher`, run through that
    command, which must exec it in the same process)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        max_open_files: int | None = None,
        launcher: Sequence[str] = (),
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.max_open_files = max_open_files
        self.launcher = tuple(launcher)
        self.process: asyncio.subprocess.Process | None = None

    def _limit_open_files(self) -> None:
        """Runs in the child before exec: only setrlimit, which is safe there."""
        assert self.max_open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_open_files, self.max_open_files))

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETOUCH_")}
        env.update(self.env)
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.launcher,
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=self._limit_open_files if self.max_open_files is not None else None,
        )

    async def terminate(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(20):
            code = await self.process.wait()
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
async def bot_process(
    discord_fake: FakeDiscord, runflow: FakeRunflow, tmp_path: Path
) -> AsyncIterator[BotProcess]:
    process = BotProcess(env_for(discord_fake, runflow, tmp_path), tmp_path / "bot.log")
    yield process
    if process.process is not None and process.process.returncode is None:
        await process.terminate(signal.SIGKILL)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures a test recorded with `record_property("figures", ...)` (the cluster test's
    counts), printed at the end of every run that ran it."""
    lines = [
        str(value)
        for report in terminalreporter.getreports("passed") + terminalreporter.getreports("failed")
        for name, value in report.user_properties
        if name == "figures"
    ]
    if lines:
        terminalreporter.section("e2e figures")
        for line in lines:
            terminalreporter.write_line(line)
