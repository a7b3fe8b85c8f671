"""How often a result is written to disk: a stamped result was synced twice, once as downloaded
and once stamped, each a whole-file fsync on the way to the member."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.pictures import memory
from bot.pictures.files import FileStore
from tests.conftest import StaticFiles
from tests.images import png
from tests.unit.test_jobs import Harness, order


async def test_a_stamped_result_is_synced_once(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    fsync = os.fsync

    def counted(fd: int) -> None:
        synced.append(Path(f"/proc/self/fd/{fd}").readlink().name)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", counted)  # as bot.pictures.files calls it
    job = await harness.submit(order(static_files.add("a.png", png(40, 30)), recipe=True))
    await harness.service.wait_settled(job.id)
    outputs = [name for name in synced if name.startswith("output-")]
    assert len(outputs) == 1, synced


async def test_a_result_is_stamped_within_the_memory_budget(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[tuple[int, int]] = []
    rewrite = FileStore.rewrite

    async def watched(
        self: FileStore, path: Path, change: Callable[[bytes], bytes], *, most_added: int
    ) -> None:
        held.append((memory.shared().used, (await asyncio.to_thread(path.stat)).st_size))
        await rewrite(self, path, change, most_added=most_added)

    monkeypatch.setattr(FileStore, "rewrite", watched)
    job = await harness.submit(order(static_files.add("a.png", png(40, 30)), recipe=True))
    await harness.service.wait_settled(job.id)
    [(used, size)] = held
    assert used >= 2 * size  # the file and its stamped copy
