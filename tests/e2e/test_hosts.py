"""/edit against every host, chosen by config, with callbacks and with polling alone."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import InProcessBot, env_for, settings_for
from tests.e2e.helpers import has_image
from tests.fakes.discord import FakeDiscord
from tests.fakes.eachlabs import FakeEachlabs
from tests.fakes.fal import FakeFal
from tests.fakes.openai import FakeOpenAI
from tests.fakes.runflow import FakeRunflow
from tests.images import png


@dataclass
class Host:
    name: str
    fake: Any
    polled: Callable[[], bool]
    """Whether the bot has asked the host about a run at least once."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _asked(fake: Any, path_part: str) -> Callable[[], bool]:
    return lambda: any(r.method == "GET" and path_part in r.path for r in fake.requests)


@pytest.fixture
async def host(request: pytest.FixtureRequest, runflow: FakeRunflow) -> AsyncIterator[Host]:
    name = request.param
    if name == "runflow":
        yield Host(name, runflow, _asked(runflow, "/v1/runs/"))
        return
    fake: Any = {"fal": FakeFal, "eachlabs": FakeEachlabs, "openai": FakeOpenAI}[name]()
    await fake.start()
    # OpenAI answers the edit in the submit request itself; there is nothing to poll.
    polled = {
        "fal": _asked(fake, "/status"),
        "eachlabs": _asked(fake, "/v1/prediction/"),
        "openai": lambda: bool(fake.requests),
    }
    yield Host(name, fake, polled[name])
    await fake.close()


def host_env(host: Host, callbacks: bool) -> dict[str, str]:
    prefix = f"RETOUCH_PROVIDERS__{host.name.upper()}__"
    env = {
        "RETOUCH_PROVIDERS__ORDER": f'["{host.name}"]',
        f"{prefix}API_KEY": host.fake.api_key,
        f"{prefix}BASE_URL": host.fake.base_url,
    }
    if callbacks:
        port = free_port()
        env |= {
            "RETOUCH_WEB__PORT": str(port),
            "RETOUCH_WEB__PUBLIC_URL": f"http://127.0.0.1:{port}",
            # Far longer than the test may take: only the callback can finish the edit in time.
            "RETOUCH_PROVIDERS__POLL_INTERVAL": "60",
            "RETOUCH_PROVIDERS__POLL_INTERVAL_MAX": "60",
        }
    return env


async def run_edit(
    host: Host,
    callbacks: bool,
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    tmp_path: Path,
    monkeypatch: Any,
) -> dict[str, Any]:
    env = env_for(discord_fake, runflow, tmp_path, host_env(host, callbacks))
    bot = InProcessBot(discord_fake, settings_for(env, monkeypatch))
    await bot.start()
    try:
        host.fake.hold = True
        await discord_fake.slash(
            "edit", prompt="through " + host.name, image=discord_fake.add_cdn_file(png(), "p.png")
        )
        # The run is held until the bot has asked about it once, so with callbacks on, only the
        # callback can tell the bot it finished before its next (60 s) poll.
        await host.fake.wait_until(lambda: True if host.polled() else None, "a first poll")
        host.fake.release()
        return await discord_fake.wait_for_message(has_image, timeout=15)
    finally:
        await bot.stop()


@pytest.mark.parametrize("host", ["runflow", "fal", "eachlabs", "openai"], indirect=True)
async def test_edit_by_polling(
    host: Host,
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = await run_edit(host, False, discord_fake, runflow, tmp_path, monkeypatch)
    assert f"through {host.name}" in result["content"]


@pytest.mark.parametrize("host", ["runflow", "fal", "eachlabs"], indirect=True)
async def test_edit_finished_by_a_callback(
    host: Host,
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = await run_edit(host, True, discord_fake, runflow, tmp_path, monkeypatch)
    assert f"through {host.name}" in result["content"]
    assert host.fake.callbacks_sent and host.fake.callbacks_sent[0]["status"] == 200
