"""A job that cannot be processed ends: failed, its credits released, its member told.

Before, any unexpected exception left the job in `submitting` holding its credits and one of
the member's slots, and it did the same after every restart.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.credits import Estimate
from bot.edits import STORAGE_FULL
from bot.jobs import MAX_STARTS
from bot.jobs.inputs import url_expired
from bot.pictures import files
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import RunflowSettings
from storage.jobs import Job, JobState
from tests.conftest import StaticFiles
from tests.fakes.runflow import FakeRunflow
from tests.images import png
from tests.unit.test_jobs import CRAFTED_EXPIRY, Harness, new_job, order, running, settled


async def polled(harness: Harness, job_id: int, *, times: int, timeout: float = 5.0) -> None:
    """Until the job has been shown as running at the host `times` times (once per start)."""

    def count() -> int:
        progress = harness.delivery.progress
        return sum(1 for shown, step in progress if shown == job_id and step.state is JobState.RUNNING)

    async with asyncio.timeout(timeout):
        while count() < times:
            harness.delivery.shown.clear()
            await harness.delivery.shown.wait()


async def assert_free_and_told(harness: Harness, job: Job) -> str:
    """The job failed, holds nothing, and its member was told once; returns what they were told."""
    assert job.state is JobState.FAILED, job.state
    balance = await harness.credits.balance(1, 3)
    assert (balance.available, balance.reserved) == (50, 0)
    [message] = [text for failed, text in harness.delivery.failures if failed.id == job.id]
    return message


@pytest.fixture
async def harness(tmp_path: Path, runflow: FakeRunflow) -> AsyncIterator[Harness]:
    settings = RunflowSettings(api_key=SecretStr(runflow.api_key), base_url=runflow.base_url)
    async with running(tmp_path, settings, RunflowProvider) as started:
        yield started


def test_a_crafted_expiry_counts_as_expired() -> None:
    assert url_expired(f"https://cdn.discordapp.com/a.png?ex={CRAFTED_EXPIRY}")
    assert url_expired(f"https://cdn.discordapp.com/a.png?ex=-{CRAFTED_EXPIRY}")


async def test_a_full_disk_fails_the_edit_free_and_says_storage_is_full(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, data: bytes, durable: bool = True) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "_write_atomic", full)
    job = await harness.submit(order(static_files.add("a.png", png())))
    message = await assert_free_and_told(harness, await settled(harness, job.id))
    assert message == STORAGE_FULL


async def test_an_unexpected_error_fails_the_edit_free_with_a_reference_in_the_log(
    harness: Harness,
    static_files: StaticFiles,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(path: Path, data: bytes) -> int:
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(files, "_write_atomic", broken)
    job = await harness.submit(order(static_files.add("a.png", png())))
    with caplog.at_level(logging.ERROR, logger="bot.jobs"):
        message = await assert_free_and_told(harness, await settled(harness, job.id))
    found = re.search(r"reference (\S+)\)", message)
    assert found is not None, message
    traced = [
        record for record in caplog.records if found.group(1) in record.getMessage() and record.exc_info
    ]
    assert len(traced) == 1  # the traceback, once, under the member's reference


async def test_a_job_that_is_interrupted_at_every_start_ends_after_max_starts(
    harness: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.hold = True  # the run never ends, so every restart finds the job running
    job = await harness.submit(order(static_files.add("a.png", png())))
    for start in range(1, MAX_STARTS + 1):
        await polled(harness, job.id, times=start)  # this start got as far as asking the host
        await harness.service.stop()
        await harness.service.start(harness.delivery)
    message = await assert_free_and_told(harness, await settled(harness, job.id))
    assert f"interrupted {MAX_STARTS} times" in message and "reference" in message


async def test_a_submit_interrupted_max_starts_times_is_not_sent_again(
    harness: Harness, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    url = static_files.add("a.png", png())
    job = await harness.repo.insert(
        new_job(
            inputs=[image.to_dict() for image in order(url).images],
        )
    )
    estimate = Estimate(credits=14, usd_micros=133_000, images=1)
    await harness.credits.reserve(guild_id=1, user_id=3, role_ids=[], job_id=job.id, estimate=estimate)
    await harness.repo.move(job.id, [JobState.QUEUED], JobState.SUBMITTING, attempts=MAX_STARTS)
    await harness.service.recover()
    await assert_free_and_told(harness, await settled(harness, job.id))
    assert runflow.runs == {}
