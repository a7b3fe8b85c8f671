"""The store's size cap holds at every write, and edits that end without a result keep nothing.

Before, the cap was kept only by the six-hourly prune and failed edits kept their files: three
free failed edits left far more than the cap on disk.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import aiohttp
import pytest
from pydantic import SecretStr

from bot.edits import STORAGE_FULL
from bot.pictures.files import FileStore, StorageFull
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import RunflowSettings
from storage.jobs import JobState
from tests.conftest import StaticFiles
from tests.fakes.runflow import FakeRunflow
from tests.images import noisy_png
from tests.unit.test_jobs import Harness, order, running, settled
from tests.unit.test_poison_jobs import assert_free_and_told

CAP = 105 * 1024
T = TypeVar("T")


def stored_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def job_folders(root: Path) -> list[str]:
    return sorted(folder.name for folder in root.glob("*/*") if folder.is_dir())


def settings_for(runflow: FakeRunflow) -> RunflowSettings:
    return RunflowSettings(api_key=SecretStr(runflow.api_key), base_url=runflow.base_url)


@pytest.fixture
async def harness(tmp_path: Path, runflow: FakeRunflow) -> AsyncIterator[Harness]:
    async with running(tmp_path, settings_for(runflow), RunflowProvider) as started:
        yield started


async def test_failed_edits_keep_no_files(
    harness: Harness, runflow: FakeRunflow, static_files: StaticFiles, tmp_path: Path
) -> None:
    runflow.fail_runs = {"failure_code": "INTERNAL_ERROR", "failure_message": "boom"}
    source = noisy_png(120, 120)  # about 43 KB: three of them are over the cap
    for n in range(3):
        job = await harness.submit(order(static_files.add(f"{n}.png", source)))
        assert (await settled(harness, job.id)).state is JobState.FAILED
    assert stored_bytes(tmp_path / "files") == 0
    assert job_folders(tmp_path / "files") == []


async def test_an_input_that_fails_its_check_is_not_left_behind(
    harness: Harness, static_files: StaticFiles, tmp_path: Path
) -> None:
    """The input is kept while it is checked; a check that fails waits for the keep to end, so
    the failure's clean-up finds the file and nothing is written after it."""
    whole = noisy_png(120, 120)
    cut = whole[: len(whole) // 2]  # a valid header, then the pixels end mid-stream
    job = await harness.submit(order(static_files.add("cut.png", cut)))
    assert (await settled(harness, job.id)).state is JobState.FAILED
    assert stored_bytes(tmp_path / "files") == 0
    assert job_folders(tmp_path / "files") == []


async def test_a_cancelled_edit_keeps_no_files(
    harness: Harness, runflow: FakeRunflow, static_files: StaticFiles, tmp_path: Path
) -> None:
    runflow.hold = True
    job = await harness.submit(order(static_files.add("a.png", noisy_png(60, 60))))
    await runflow.wait_for_run()  # its input was kept before it was sent
    assert job_folders(tmp_path / "files") == [str(job.id)]
    assert await harness.service.cancel(job.id) is not None
    assert job_folders(tmp_path / "files") == []
    runflow.release()


async def test_a_write_over_the_cap_deletes_the_oldest_finished_edits_first(tmp_path: Path) -> None:
    root = tmp_path / "files"
    outside = FileStore(root)  # what a previous run left, measured when the capped store starts
    for job in (1, 2, 3):
        await outside.write(outside.input_path(job, 0, "png"), b"x" * 100)

    async def open_jobs() -> set[int]:
        return {1}  # the oldest is still running: its files stay whatever their age

    store = FileStore(root, max_bytes=350, in_use=open_jobs)
    await store.write(store.input_path(4, 0, "png"), b"y" * 100)
    assert job_folders(root) == ["1", "3", "4"]  # 2, the oldest finished, made room
    await store.write(store.output_path(4, 0, "png"), b"z" * 150)
    assert job_folders(root) == ["1", "4"]
    assert stored_bytes(root) == 350


async def test_a_write_is_refused_when_only_open_edits_files_remain(tmp_path: Path) -> None:
    root = tmp_path / "files"

    async def open_jobs() -> set[int]:
        return {1, 2}

    store = FileStore(root, max_bytes=250, in_use=open_jobs)
    await store.write(store.input_path(1, 0, "png"), b"x" * 100)
    await store.write(store.input_path(2, 0, "png"), b"x" * 100)
    with pytest.raises(StorageFull):
        await store.write(store.input_path(3, 0, "png"), b"x" * 100)
    assert job_folders(root) == ["1", "2"] and stored_bytes(root) == 200
    await store.write(store.input_path(2, 0, "png"), b"x" * 150)  # a rewrite counts only the change
    assert stored_bytes(root) == 250


async def test_a_download_finished_in_place_counts_what_it_really_added(
    tmp_path: Path, static_files: StaticFiles
) -> None:
    """The finishing step (a result's stamp) is given its room first, then counted at its size."""
    root = tmp_path / "files"

    async def open_jobs() -> set[int]:
        return {1, 2, 3}

    async def append(handle: BinaryIO) -> None:
        handle.seek(0, os.SEEK_END)
        handle.write(b"y" * 20)

    store = FileStore(root, max_bytes=250, in_use=open_jobs)
    async with aiohttp.ClientSession() as session:
        path = store.output_path(1, 0, "png")
        size = await store.download_to(
            session,
            static_files.add("r.png", b"x" * 100),
            path,
            max_bytes=1000,
            finish=append,
            finish_room=50,
        )
    assert size == 120 and path.read_bytes() == b"x" * 100 + b"y" * 20
    await store.write(store.input_path(2, 0, "png"), b"x" * 130)  # fits only if 20 were counted, not 50
    with pytest.raises(StorageFull):
        await store.write(store.input_path(3, 0, "png"), b"x")
    assert stored_bytes(root) == 250


async def test_an_edit_over_the_cap_fails_free_saying_storage_is_full(
    tmp_path: Path, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    # The cap is checked when the file is written, whatever the member sent: no prune needed.
    async with running(tmp_path, settings_for(runflow), RunflowProvider, max_stored_bytes=CAP) as harness:
        job = await harness.submit(order(static_files.add("big.png", noisy_png(300, 300))))
        message = await assert_free_and_told(harness, await settled(harness, job.id))
    assert message == STORAGE_FULL
    assert runflow.runs == {}
    assert stored_bytes(tmp_path / "files") == 0


async def test_a_staged_file_left_behind_goes_with_the_retention_and_discard_touches_nothing_else(
    tmp_path: Path,
) -> None:
    """A painted mask whose edit never came (a crash between the page's submit and the job) must
    not stay forever; and `discard` removes staged files only."""
    import os

    files = FileStore(tmp_path)
    staged = files.staging_path("painted-1.png")
    await files.write(staged, b"mask")
    os.utime(staged, (1_000, 1_000))
    fresh = files.staging_path("painted-2.png")
    await files.write(fresh, b"mask")
    kept = files.input_path(5, 0, "png")
    await files.write(kept, b"input")
    await files.discard(kept)
    assert kept.exists()
    await files.prune(older_than=2_000)
    assert not staged.exists() and fresh.exists() and kept.exists()


async def test_a_download_goes_to_a_thread_once_to_open_once_a_block_and_once_to_be_named(
    tmp_path: Path, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step on a thread costs the loop a hand-off and a wake-up; opening (with its folder)
    and closing, syncing and naming were five steps where two do."""
    steps: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(work: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        steps.append(getattr(work, "__name__", repr(work)))
        return await to_thread(work, *args, **kwargs)

    store = FileStore(tmp_path / "files")
    path = store.output_path(1, 0, "png")
    url = static_files.add("r.png", b"x" * 100)
    async with aiohttp.ClientSession() as session:
        monkeypatch.setattr(asyncio, "to_thread", counted)
        await store.download_to(session, url, path, max_bytes=1000)
    assert len(steps) == 3, steps  # open, the one block, name
    assert path.read_bytes() == b"x" * 100 and not path.with_suffix(".png.part").exists()
