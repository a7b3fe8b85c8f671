"""Starting the world process and the bots under test, and timing what happens inside the bot.

The bot under test — Retouch, or a bare discord.py bot for a baseline — runs in this process,
configured exactly as `python -m bot` would be (tests' `env_for`/`settings_for`); the fakes it
talks to run in `bench.world`. Timing hooks wrap attributes of live objects (a service's method,
`bot.pictures.images.fit_under`) for the run; no product file is changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands

from bench.core import ROOT
from bot.pictures import images as bot_images
from bot.runtime.config import Settings
from cogs.app import Retouch
from storage.jobs import Job, JobState
from tests.e2e.conftest import env_for, settings_for
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow

# -------------------------------------------------------------------------------- the world process


class World:
    """A handle on a `bench.world` process: its addresses, and its control API as methods."""

    def __init__(self, process: asyncio.subprocess.Process, info: dict[str, Any]) -> None:
        self.process = process
        self.info = info
        self.pid: int = info["pid"]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900))

    @classmethod
    async def start(cls, *, upload_limit: int = 10 * 1024 * 1024) -> World:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.world",
            "--upload-limit",
            str(upload_limit),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,  # closed when we exit, which tells the world to stop
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        async with asyncio.timeout(60):
            line = await process.stdout.readline()
        if not line:
            raise RuntimeError("the world process exited before it was ready")
        return cls(process, json.loads(line))

    async def call(self, endpoint: str, /, **body: Any) -> Any:
        async with self._session.post(f"{self.info['control']}/{endpoint}", json=body) as response:
            result = await response.json()
            if response.status != 200:
                raise RuntimeError(f"world /{endpoint}: {result}")
            return result

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call("shutdown")
        await self._session.close()
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def __aenter__(self) -> World:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Convenience wrappers around the control API (see bench.world.World for each).

    async def members(self, count: int) -> list[int]:
        return cast(list[int], await self.call("members", count=count))

    async def cdn(self, name: str, width: int, height: int, grain: float = 4.0) -> dict[str, Any]:
        return cast(
            dict[str, Any], await self.call("cdn", name=name, width=width, height=height, grain=grain)
        )

    async def edit(
        self, users: list[int], image: str, prompt: str = "make it brighter"
    ) -> list[dict[str, Any]]:
        """`/edit` from each user at once, with the CDN file named `image`; [{id, user, sent_at}]."""
        options = {"prompt": prompt, "image": f"@{image}"}
        return cast(list[dict[str, Any]], await self.call("slash", users=users, options=options))

    async def acks(self, ids: list[int], timeout: float = 60.0) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], await self.call("acks", ids=ids, timeout=timeout))

    async def stats(self, polls: bool = False) -> dict[str, Any]:
        return cast(dict[str, Any], await self.call("stats", polls=polls))


# -------------------------------------------------------------------------------- configuration


def retouch_settings(world: World, data: Path, overrides: dict[str, str] | None = None) -> Settings:
    """Settings from RETOUCH_* variables, as the e2e tests build them, pointed at the world."""
    info = world.info
    fake_discord = SimpleNamespace(
        token=info["token"], api_base=info["api_base"], gateway_url=info["gateway_url"]
    )
    fake_runflow = SimpleNamespace(api_key=info["runflow_api_key"], base_url=info["runflow_base_url"])
    env = env_for(
        cast(FakeDiscord, fake_discord),
        cast(FakeRunflow, fake_runflow),
        data,
        {"RETOUCH_LOG__LEVEL": "WARNING", **(overrides or {})},
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        return settings_for(env, monkeypatch)


def wide_open(members: int = 200, concurrency: int = 200) -> dict[str, str]:
    """Limits raised so that fairness, quotas and credits never throttle a measurement."""
    return {
        "RETOUCH_EDITING__MAX_JOBS_PER_MEMBER": "100",
        "RETOUCH_EDITING__MAX_JOBS_PER_SERVER": "10000",
        "RETOUCH_CREDITS__DEFAULT_ALLOWANCE": "1000000000",
        "RETOUCH_CREDITS__CONFIRM_ABOVE": "1000000000",
        "RETOUCH_PROVIDERS__RUNFLOW__MAX_CONCURRENCY": str(min(256, concurrency)),
    }


# -------------------------------------------------------------------------------- running a bot


async def start_client(client: commands.Bot, token: str, timeout: float = 30.0) -> asyncio.Task[None]:
    """Log in and connect; returns the running task once the client is ready."""
    task = asyncio.create_task(client.start(token))
    ready = asyncio.create_task(client.wait_until_ready())
    await asyncio.wait({ready, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if ready.done() and not task.done():
        return task
    ready.cancel()
    # Close what setup_hook opened (the database's thread would keep the process alive).
    await client.close()
    if task.done():
        task.result()
        raise RuntimeError("the bot stopped before it was ready")
    task.cancel()
    raise TimeoutError("the bot did not become ready")


async def stop_client(client: commands.Bot, task: asyncio.Task[None]) -> None:
    await client.close()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass
class RunningRetouch:
    bot: Retouch
    task: asyncio.Task[None]
    started_in: float

    async def stop(self) -> None:
        await stop_client(self.bot, self.task)


async def start_retouch(settings: Settings) -> RunningRetouch:
    """The real bot, as InProcessBot starts it in the e2e tests, timed from construction to ready."""
    started = time.perf_counter()
    bot = Retouch(settings, guild_ready_timeout=0.1)
    task = await start_client(bot, settings.discord.token.get_secret_value())
    if not bot.jobs.accepting:  # setup_hook (which starts the job service) runs before READY
        await stop_client(bot, task)
        raise RuntimeError("the bot was ready but its job service was not accepting edits")
    return RunningRetouch(bot, task, time.perf_counter() - started)


EditHandler = Callable[[discord.Interaction, str, discord.Attachment], Awaitable[None]]


class BareBot(commands.Bot):
    """A discord.py bot with nothing but an `/edit` command whose body is `handler`: the floor."""

    def __init__(self, handler: EditHandler) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            guild_ready_timeout=0.1,
        )
        self._handler = handler

    async def setup_hook(self) -> None:
        handler = self._handler

        @app_commands.command(name="edit", description="Edit a picture")
        async def edit(interaction: discord.Interaction, prompt: str, image: discord.Attachment) -> None:
            await handler(interaction, prompt, image)

        self.tree.add_command(edit)
        await self.tree.sync()


def point_discord_py_at(world: World) -> None:
    """What `cogs.app.route_discord` does for Retouch, for the bare bot."""
    discord.http.Route.BASE = world.info["api_base"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(world.info["gateway_url"])


async def start_bare(world: World, handler: EditHandler) -> tuple[BareBot, asyncio.Task[None]]:
    point_discord_py_at(world)
    bot = BareBot(handler)
    return bot, await start_client(bot, world.info["token"])


# -------------------------------------------------------------------------------- timing hooks


@dataclass
class Settled:
    """When each delivered job's ledger capture committed, by job id."""

    at: dict[int, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_count(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.at) < count:
                self.changed.clear()
                await self.changed.wait()

    async def wait_quiet(self, count: int, *, quiet: float = 15.0, timeout: float = 900.0) -> int:
        """Until `count` jobs have settled, or none has for `quiet` seconds; returns how many have.

        An overloaded bot misses Discord's 3 s deadline for some /edits, and those never become
        jobs; a benchmark must not wait for them forever.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last, since = len(self.at), loop.time()
        while len(self.at) < count and loop.time() - since < quiet and loop.time() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1.0)
            if len(self.at) != last:
                last, since = len(self.at), loop.time()
        return len(self.at)


def time_settlements(bot: Retouch) -> Settled:
    """Marks each delivered job when it ends: its capture commits with its end (`Results.deliver`),
    so the end is when the charge is on the books. Hooks the job service's endings, whose
    `wait_settled` the service hands out."""
    settled = Settled()
    endings = cast(Any, bot.jobs.wait_settled).__self__
    original = endings.finished

    def finished(job: Job) -> None:
        original(job)
        if job.state is JobState.DONE:
            settled.at[job.id] = time.monotonic()
            settled.changed.set()

    setattr(endings, "finished", finished)  # noqa: B010 (an instance attribute over the method)
    return settled


@dataclass
class Fits:
    """Every `fit_under` call made while the hook is on: (start, end or None, input bytes)."""

    loop: asyncio.AbstractEventLoop
    calls: list[tuple[float, float | None, int]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def active_between(self, start: float, end: float) -> int:
        return sum(1 for s, e, _ in self.calls if s < end and (e is None or e > start))

    def notify(self) -> None:
        """Called from the worker thread running fit_under."""
        self.loop.call_soon_threadsafe(self.changed.set)

    async def wait_running(self, *, after: int, larger_than: int, timeout: float) -> None:
        """Until a call made after the first `after` calls, on more than `larger_than` bytes, runs."""
        async with asyncio.timeout(timeout):
            while not any(e is None and size > larger_than for _, e, size in self.calls[after:]):
                self.changed.clear()
                await self.changed.wait()


@contextlib.contextmanager
def time_fits() -> Iterator[Fits]:
    fits = Fits(asyncio.get_running_loop())
    original = bot_images.fit_under
    lock = threading.Lock()

    def fit_under(data: bytes, limit: int, *, exif: bytes | None = None) -> bot_images.Fitted:
        with lock:
            index = len(fits.calls)
            fits.calls.append((time.monotonic(), None, len(data)))
        fits.notify()
        try:
            return original(data, limit, exif=exif)
        finally:
            with lock:
                start, _, size = fits.calls[index]
                fits.calls[index] = (start, time.monotonic(), size)
            fits.notify()

    bot_images.fit_under = fit_under
    try:
        yield fits
    finally:
        bot_images.fit_under = original
