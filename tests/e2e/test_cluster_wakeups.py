"""Wake-ups between processes on one PostgreSQL database: a host callback that reaches the
process not holding the edit, and an edit put in line by a process with no free worker.

Each test sets things up so that only a wake-up from the other process can finish in time:
polling so slow (minutes) that the holder never polls on its own again, or idle workers that
never look at the line on their own. Without shared wake-ups each waits for its timeout.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from storage.store import open_db
from tests.e2e.conftest import BotProcess, InProcessBot, env_for, settings_for
from tests.e2e.helpers import has_image
from tests.fakes.discord import FakeDiscord, Guild
from tests.fakes.runflow import FakeRunflow
from tests.images import png
from tests.postgres import free_port
from tests.reliability.store import read_rows

# Longer than any test here runs: the holder of a run never polls it again on its own.
SLOW_POLL = "600"
WAKE_TIMEOUT = 30.0  # what a wake-up is given to cross, generous for a loaded machine

T = TypeVar("T")


async def poll(check: Callable[[], T | None], what: str) -> T:
    """Until `check()` gives something: for the rows only the bots write."""
    deadline = time.monotonic() + WAKE_TIMEOUT
    while (found := check()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {WAKE_TIMEOUT} s waiting for {what}")
        await asyncio.sleep(0.1)
    return found


def jobs(pg_url: str) -> list[dict[str, Any]]:
    return read_rows(pg_url, "SELECT prompt, state, lease_owner FROM jobs ORDER BY id") or []


@pytest.fixture
def fake_shards() -> int:
    return 2


class Pair:
    """Two `python -m bot run` processes, shard 0 and shard 1, on one database."""

    def __init__(self, processes: list[BotProcess], ports: list[int]) -> None:
        self.processes, self.ports = processes, ports

    def lease_name(self, shard: int) -> str:
        process = self.processes[shard].process
        assert process is not None
        return f"{socket.gethostname()}:{process.pid}"


@pytest.fixture
async def crossed(
    discord_fake: FakeDiscord, runflow: FakeRunflow, tmp_path: Path, pg_url: str
) -> AsyncIterator[Pair]:
    """Each process tells the host to call back the *other* process's web server, and polls once
    every ten minutes: whichever holds an edit hears of its callback only through the other."""
    await (await open_db(pg_url)).close()  # migrated once, as `python -m bot migrate` would
    ports = [free_port(), free_port()]
    processes = []
    for shard in (0, 1):
        overrides = {
            "RETOUCH_STORAGE__URL": pg_url,
            "RETOUCH_DISCORD__SHARD_COUNT": "2",
            "RETOUCH_DISCORD__SHARD_IDS": f"[{shard}]",
            "RETOUCH_WEB__PORT": str(ports[shard]),
            "RETOUCH_WEB__PUBLIC_URL": f"http://127.0.0.1:{ports[1 - shard]}",
            "RETOUCH_PROVIDERS__POLL_INTERVAL": SLOW_POLL,
            "RETOUCH_PROVIDERS__POLL_INTERVAL_MAX": SLOW_POLL,
            "RETOUCH_PROVIDERS__DEADLINE": "3600",
        }
        env = env_for(discord_fake, runflow, tmp_path, overrides)
        processes.append(BotProcess(env, tmp_path / f"bot-{shard}.log"))
    pair = Pair(processes, ports)
    try:
        await asyncio.gather(*(process.start() for process in processes))
        await discord_fake.wait_ready(timeout=60, shards=[0, 1])
        yield pair
    finally:
        for process in processes:
            if process.process is not None and process.process.returncode is None:
                await process.terminate(signal.SIGKILL)


async def test_a_callback_reaching_the_other_process_wakes_the_holder(
    crossed: Pair, discord_fake: FakeDiscord, runflow: FakeRunflow, pg_url: str
) -> None:
    fake = discord_fake
    runflow.hold = True
    image = fake.add_cdn_file(png(), "p.png")
    await fake.slash("edit", prompt="brighter", image=image)
    run = await runflow.wait_for_run(timeout=WAKE_TIMEOUT)
    # The holder has asked once and found the run going; its next poll is minutes away.
    await runflow.wait_until(lambda: run.polls >= 1 or None, "the holder's first poll", WAKE_TIMEOUT)
    running = await poll(lambda: [j for j in jobs(pg_url) if j["state"] == "running"] or None, "the run")
    holder = [crossed.lease_name(shard) for shard in (0, 1)].index(running[0]["lease_owner"])

    runflow.release()

    result = await fake.wait_for_message(has_image, timeout=WAKE_TIMEOUT)
    assert result["attachments"]
    callbacks = await runflow.wait_callbacks()
    assert callbacks[0]["url"].startswith(f"http://127.0.0.1:{crossed.ports[1 - holder]}/")
    assert callbacks[0]["status"] == 200
    assert run.polls == 2  # the first look, and the one the callback brought forward


@pytest.fixture
async def first_alone(
    discord_fake: FakeDiscord, runflow: FakeRunflow, tmp_path: Path, pg_url: str
) -> AsyncIterator[BotProcess]:
    """Shard 0 as a `python -m bot run` process with one worker (the host's max_concurrency 1)."""
    await (await open_db(pg_url)).close()
    overrides = {
        "RETOUCH_STORAGE__URL": pg_url,
        "RETOUCH_DISCORD__SHARD_COUNT": "2",
        "RETOUCH_DISCORD__SHARD_IDS": "[0]",
        "RETOUCH_PROVIDERS__RUNFLOW__MAX_CONCURRENCY": "1",
    }
    process = BotProcess(env_for(discord_fake, runflow, tmp_path, overrides), tmp_path / "bot-0.log")
    try:
        await process.start()
        await discord_fake.wait_ready(timeout=60, shards=[0])
        yield process
    finally:
        if process.process is not None and process.process.returncode is None:
            await process.terminate(signal.SIGKILL)


async def test_an_edit_queued_where_no_worker_is_free_is_claimed_by_an_idle_process(
    first_alone: BotProcess,
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    tmp_path: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = discord_fake
    guild: Guild = fake.guilds[fake.guild_id]  # shard 0: its edits reach the first process
    runflow.hold = True
    image = fake.add_cdn_file(png(), "p.png")
    await fake.slash("edit", in_guild=guild, prompt="first", image=image)
    await runflow.wait_for_run(timeout=WAKE_TIMEOUT)  # the first process's only worker is busy

    # The second process (in this test's process) has two workers, idle, which never look at
    # the line on their own: only a notice can tell them of a new edit.
    monkeypatch.setattr("bot.jobs.queue.LOOK_INTERVAL", 3600.0)
    overrides = {
        "RETOUCH_STORAGE__URL": pg_url,
        "RETOUCH_DISCORD__SHARD_COUNT": "2",
        "RETOUCH_DISCORD__SHARD_IDS": "[1]",
        "RETOUCH_PROVIDERS__RUNFLOW__MAX_CONCURRENCY": "2",
        "RETOUCH_STORAGE__FILES_DIR": str(tmp_path / "files"),
    }
    second = InProcessBot(fake, settings_for(env_for(fake, runflow, tmp_path, overrides), monkeypatch))
    await second.start()
    try:
        await fake.slash("edit", in_guild=guild, prompt="second", image=image)
        run = await runflow.wait_for_run(count=2, timeout=WAKE_TIMEOUT)
        assert run.input["prompt"] == "second"
        assert first_alone.process is not None
        owners = {job["prompt"]: job["lease_owner"] for job in jobs(pg_url)}
        assert owners["first"] == f"{socket.gethostname()}:{first_alone.process.pid}"
        assert owners["second"] not in (None, owners["first"])

        runflow.release()
        await poll(lambda: all(job["state"] == "done" for job in jobs(pg_url)) or None, "both delivered")
        assert sum(has_image(message) for message in fake.messages.values()) == 2
    finally:
        await second.stop()
