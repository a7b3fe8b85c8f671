"""`check-hosts` against the loopback fakes: what it reports for a host that keeps the mask, one
that repaints everything, a rejected key, a host that is not there, and one that is too slow."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.cli.hostcheck import (
    HONOURED_BELOW,
    IGNORED_FROM,
    HostReport,
    Output,
    Picture,
    check_host,
    check_hosts,
    make_picture,
    mask_verdict,
    render,
)
from bot.pictures.files import FileStore
from bot.providers.settings import ProvidersSettings
from tests.fakes.fal import FakeFal
from tests.fakes.openai import FakeOpenAI
from tests.fakes.runflow import FakeRunflow

QUICK = {"poll_interval": 0.02, "poll_interval_max": 0.05}


@pytest.fixture(scope="module")
def picture() -> Picture:
    return make_picture()


@pytest.fixture
async def fal() -> AsyncIterator[FakeFal]:
    async with FakeFal() as fake:
        yield fake


def providers(**hosts: Any) -> ProvidersSettings:
    """Settings for the given hosts, each `{"api_key", "base_url"}`, in the order given."""
    return ProvidersSettings.model_validate({"order": list(hosts), **hosts, **QUICK})


def keyed(fake: FakeRunflow | FakeFal | FakeOpenAI, key: str | None = None) -> dict[str, str]:
    return {"api_key": key or fake.api_key, "base_url": fake.base_url}


async def check(
    name: str, settings: ProvidersSettings, picture: Picture, tmp_path: Path, timeout: float = 10
) -> HostReport:
    return await check_host(name, settings, picture, FileStore(tmp_path), timeout=timeout)


async def test_a_host_that_keeps_the_mask_is_reported_honoured(
    runflow: FakeRunflow, picture: Picture, tmp_path: Path
) -> None:
    runflow.honour_mask = True
    runflow.delay = 0.2  # long enough for a poll to see the run before it ends
    report = await check("runflow", providers(runflow=keyed(runflow)), picture, tmp_path)
    assert report.passed, report.problem
    assert report.reachable and report.key_accepted is True
    assert report.output == Output(1024, 1024, "PNG")
    assert report.changed_outside is not None and report.changed_outside < 0.001
    assert report.usd_micros == 9_000  # what the fake's run reports as its cost
    # Runflow's own words, read off the wire, not our normalised ones.
    assert "running" in report.statuses and report.statuses[-1] == "succeeded"
    lines = render(report)
    assert lines[0] == "runflow: passed"
    assert any(line.split() == ["mask", "honoured", "(0.0%", "changed", "outside)"] for line in lines)
    assert any(line.split() == ["cost", "reported", "$0.0090"] for line in lines)
    # What the host was sent: the low-quality single 1K edit with a mask, nothing dearer.
    sent = next(iter(runflow.runs.values())).input
    assert (sent["quality"], sent["num_images"], sent["image_size"]) == ("low", 1, "square_hd")
    assert sent["mask_url"].startswith("data:image/png;base64,")


async def test_a_host_that_repaints_everything_is_reported_ignoring_the_mask(
    runflow: FakeRunflow, picture: Picture, tmp_path: Path
) -> None:
    report = await check("runflow", providers(runflow=keyed(runflow)), picture, tmp_path)
    assert report.passed, report.problem  # the edit itself worked; the bot composites anyway
    assert report.changed_outside is not None and report.changed_outside > 0.9
    assert mask_verdict(report.changed_outside, report.output).startswith("ignored (")


async def test_a_rejected_key_is_one_line_naming_the_setting(
    runflow: FakeRunflow, picture: Picture, tmp_path: Path
) -> None:
    report = await check("runflow", providers(runflow=keyed(runflow, "rf-wrong")), picture, tmp_path)
    assert not report.passed and report.reachable and report.key_accepted is False
    assert report.problem is not None
    assert (
        report.problem.startswith("key rejected (HTTP 401") and "providers.runflow.api_key" in report.problem
    )
    assert render(report)[0].startswith("runflow: FAILED, key rejected")
    assert not runflow.runs


async def test_a_host_that_is_not_there_is_reported_unreachable(picture: Picture, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = providers(fal={"api_key": "k", "base_url": f"http://127.0.0.1:{port}"})
    report = await check("fal", settings, picture, tmp_path)
    assert not report.reachable and report.key_accepted is None
    assert report.problem is not None and report.problem.startswith("not reachable (")
    assert "providers.fal.base_url" in report.problem


async def test_a_slow_host_is_given_up_at_the_timeout_and_its_run_cancelled(
    fal: FakeFal, picture: Picture, tmp_path: Path
) -> None:
    fal.queue_paused = True
    report = await check("fal", providers(fal=keyed(fal)), picture, tmp_path, timeout=0.5)
    assert report.problem is not None
    assert report.problem.startswith("no result within 0.5 s (last status: queued)"), report.problem
    assert report.statuses == ["IN_QUEUE"]
    assert [request.cancel_requested for request in fal.order] == [True]


async def test_interrupting_the_check_cancels_the_run_at_the_host(
    fal: FakeFal, picture: Picture, tmp_path: Path
) -> None:
    """Ctrl-C cancels the main task; the run it leaves behind must not go on to be billed."""
    fal.queue_paused = True
    task = asyncio.create_task(check("fal", providers(fal=keyed(fal)), picture, tmp_path))
    await fal.wait_until(lambda: True if fal.order else None, "the submit")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [request.cancel_requested for request in fal.order] == [True]


async def test_one_failing_host_does_not_stop_the_others(
    fal: FakeFal, picture: Picture, tmp_path: Path
) -> None:
    openai = FakeOpenAI()
    async with openai:
        settings = providers(fal=keyed(fal, "fal-wrong"), openai=keyed(openai))
        heard: list[str] = []
        reports = await check_hosts(
            settings,
            ["fal", "openai"],
            FileStore(tmp_path),
            timeout=10,
            done=lambda report: heard.append(report.host),
        )
    assert [report.host for report in reports] == ["fal", "openai"] and sorted(heard) == ["fal", "openai"]
    assert not reports[0].passed and reports[0].key_accepted is False
    assert reports[1].passed, reports[1].problem
    # OpenAI answers in one request: no host statuses, so our own name for how it ended.
    assert reports[1].statuses == ["succeeded"]
    assert reports[1].output == Output(1024, 1024, "PNG")


def test_the_mask_verdict_reads_plainly() -> None:
    shape = Output(1024, 1024, "PNG")
    assert mask_verdict(0.003, shape) == "honoured (0.3% changed outside)"
    assert mask_verdict(HONOURED_BELOW, shape) == "partly honoured (5.0% changed outside)"
    assert mask_verdict(IGNORED_FROM, shape) == "ignored (50.0% changed outside)"
    assert mask_verdict(0.87, shape) == "ignored (87.0% changed outside)"
    assert mask_verdict(None, Output(32, 24, "PNG")).startswith("not measured (the output is 32×24")
    assert mask_verdict(None, None) == "not measured (no output)"


def test_the_picture_is_small_and_its_mask_is_the_centre(picture: Picture) -> None:
    """Inline images must stay small (Runflow: "fine under 1 MiB"), and the mask must leave
    most of the picture outside it, so a repaint cannot hide."""
    assert len(picture.png) < 1024 * 1024
    assert picture.image.size == picture.editable.size == (1024, 1024)
    assert picture.editable.getbbox() == (256, 256, 768, 768)
    assert picture.editable.histogram()[255] == 512 * 512
    colours = picture.image.getcolors(maxcolors=1 << 24) or []
    assert len(colours) > 10_000  # gradients: any repaint changes pixels
