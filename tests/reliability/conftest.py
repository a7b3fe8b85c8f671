"""Fixtures for the reliability tests, the `soak` marker, and the end-of-session figures.

The long randomized crash runs are marked `soak` (registered in pyproject.toml). They run
only when the marker expression names it (`make soak`: `pytest tests/reliability -m soak`);
any other run deselects them, so a bare `pytest` is not silently a 10-minute soak (`make
pytest` says `-m "not soak"` anyway).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import discord
import pytest

from tests.e2e.conftest import InProcessBot, env_for, settings_for
from tests.reliability.fakes import ReliableDiscord, ReliableRunflow
from tests.reliability.harness import BASE_ENV, TALLY
from tests.reliability.lab import BotLab, CrashLab

REPORT_ENV = "RETOUCH_RELIABILITY_REPORT"
"""If set, the figures are also written there as JSON (for a nightly job to keep)."""
CALLBACK_SECRET = "whsec_reliability"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    soak = [item for item in items if item.get_closest_marker("soak") is not None]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    """Under pytest-xdist each test process keeps its own tally; what a test added goes with its
    report to the process that prints the figures."""
    before = TALLY.counts()
    item.user_properties.append(("tally", before))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "teardown":
        return
    before = dict(item.user_properties).get("tally")
    if isinstance(before, dict):
        now = TALLY.counts()
        report.user_properties.append(("tally_added", {k: now[k] - before.get(k, 0) for k in now}))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/reliability/" in report.nodeid.replace("\\", "/"):
        group = "soak" if "soak" in report.keywords else "ci"
        TALLY.seconds[group] = TALLY.seconds.get(group, 0.0) + report.duration
    if getattr(report, "node", None) is not None:  # a worker's report, in the xdist controller
        added = dict(report.user_properties).get("tally_added")
        if isinstance(added, dict):
            TALLY.add(added)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.seconds:
        return
    figures = TALLY.as_dict()
    write = terminalreporter.write_line
    terminalreporter.section("reliability figures")
    write(
        f"crash runs {figures['crash_runs']} (restarts {figures['restarts']}), fault scenarios "
        f"{figures['fault_scenarios']}, faults fired {figures['faults_fired']}, jobs judged "
        f"{figures['jobs_judged']}, host runs orphaned by a crash {figures['host_runs_orphaned']}"
    )
    write("problems: " + ", ".join(f"{name} {count}" for name, count in figures["problems"].items()))
    write(
        "problems in tests of known (xfail) bugs: "
        + ", ".join(f"{name} {count}" for name, count in figures["problems_in_known_bug_tests"].items())
    )
    write("seconds: " + ", ".join(f"{name} {value}" for name, value in figures["seconds"].items()))
    target = os.environ.get(REPORT_ENV)
    if target:
        figures["finished_at"] = time.time()
        Path(target).write_text(json.dumps(figures, indent=2), encoding="utf-8")


@pytest.fixture
async def discord_fake() -> AsyncIterator[ReliableDiscord]:
    fake = ReliableDiscord()
    await fake.start()
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield fake
    discord.http.Route.BASE = base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
    await fake.close()


@pytest.fixture
async def runflow() -> AsyncIterator[ReliableRunflow]:
    fake = ReliableRunflow(callback_secret=CALLBACK_SECRET)
    fake.callback_retry_delays = (0.05, 0.1, 0.2)
    await fake.start()
    yield fake
    await fake.close()


def known_bug(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("xfail")
    return marker is not None and bool(marker.kwargs.get("strict"))


@pytest.fixture
async def crash_lab(
    discord_fake: ReliableDiscord, runflow: ReliableRunflow, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[CrashLab]:
    """A lab for one crash test; its seed comes from a `seed` parameter when the test has one."""
    seed = int(request.node.callspec.params.get("seed", 0)) if hasattr(request.node, "callspec") else 0
    lab = CrashLab(discord_fake, runflow, tmp_path, seed=seed)
    lab.known_bug = known_bug(request)
    yield lab
    await lab.stop()


@pytest.fixture
def overrides() -> dict[str, str]:
    """Extra RETOUCH_* settings for one in-process test: `@pytest.mark.parametrize("overrides", ...)`."""
    return {}


@pytest.fixture
async def lab(
    discord_fake: ReliableDiscord,
    runflow: ReliableRunflow,
    tmp_path: Path,
    overrides: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> AsyncIterator[BotLab]:
    """The bot in this process against the reliable fakes, for the fault matrix."""
    env = env_for(discord_fake, runflow, tmp_path, {**BASE_ENV, **overrides})
    runner = InProcessBot(discord_fake, settings_for(env, monkeypatch))
    await runner.start()
    bench = BotLab(discord_fake, runflow, tmp_path, runner)
    bench.known_bug = known_bug(request)
    yield bench
    await runner.stop()
