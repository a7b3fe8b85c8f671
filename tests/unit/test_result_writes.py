"""How often a result is written to disk: a stamped result was synced twice, once as downloaded
and once stamped, each a whole-file fsync on the way to the member."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
