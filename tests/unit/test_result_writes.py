"""How often and when a job's files are written to disk: a stamped result was synced twice, once
as downloaded and once stamped, each a whole-file fsync on the way to the member; then written
twice, once as downloaded and once stamped, where a PNG needs only its end written. And a sync
(slower than a download on a local disk) held back the next request to a host or to Discord."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.edits import Receipt, ResultFile
from bot.jobs import recipe
from bot.pictures import memory
from bot.pictures.files import FileStore
from bot.providers.base import EditRequest, Run
from bot.providers.runflow import RunflowProvider
from storage.db import Database, Tx
from storage.jobs import Job
from tests.conftest import StaticFiles
from tests.data.make_corpus import turned_jpeg
from tests.fakes.runflow import expected_output_image
from tests.images import decode, png
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


async def test_a_png_result_is_stamped_as_it_is_downloaded_not_written_again(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    rewritten: list[Path] = []
    rewrite = FileStore.rewrite

    async def watched(self: FileStore, path: Path, change: Callable[[bytes], bytes], **kwargs: Any) -> None:
        rewritten.append(path)
        await rewrite(self, path, change, **kwargs)

    monkeypatch.setattr(FileStore, "rewrite", watched)
    source = png(40, 30)
    job = await harness.submit(order(static_files.add("a.png", source), recipe=True))
    done = await harness.service.wait_settled(job.id)
    [(_, [delivered])] = harness.delivery.delivered
    made = io.BytesIO()
    expected_output_image(decode(source)).save(made, "PNG")  # as the fake host encodes it
    assert rewritten == []
    assert delivered.path.read_bytes() == recipe.stamp(made.getvalue(), recipe.of(done))


async def test_a_result_is_stamped_within_the_memory_budget(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JPEG carries its recipe near its start, so it is stamped whole: its bytes and their
    stamped copy are held at once."""
    held: list[tuple[int, int]] = []
    stamp = recipe.stamp

    def watched(data: bytes, *args: Any, **kwargs: Any) -> bytes:
        held.append((memory.shared().used, len(data)))
        return stamp(data, *args, **kwargs)

    monkeypatch.setattr(recipe, "stamp", watched)
    job = await harness.submit(
        order(static_files.add("a.png", png(40, 30)), recipe=True, output_format="jpeg")
    )
    await harness.service.wait_settled(job.id)
    [(used, size)] = held
    assert used >= 2 * size  # the file and its stamped copy


async def test_a_downloaded_png_result_is_checked_as_it_is_written_not_read_back(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check of a result's structure (every chunk's checksum) read the whole file back from
    disk after the download had just written it; it now sees the blocks as they are written."""
    read_back: list[str] = []
    read_bytes = Path.read_bytes

    def watched(path: Path) -> bytes:
        if path.name.startswith("output-"):
            read_back.append(path.name)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", watched)
    job = await harness.submit(order(static_files.add("a.png", png(40, 30)), recipe=True))
    done = await harness.service.wait_settled(job.id)
    assert done.state.value == "done"
    assert read_back == []
    [(_, [delivered])] = harness.delivery.delivered
    assert (delivered.width, delivered.height) == decode(read_bytes(delivered.path)).size


def held_syncs(
    monkeypatch: pytest.MonkeyPatch, prefix: str, until: threading.Event, events: list[str]
) -> None:
    """Each fsync of a file named `prefix…` waits (at most 5 s) for `until`, then notes "synced"."""
    fsync = os.fsync

    def held(fd: int) -> None:
        if Path(f"/proc/self/fd/{fd}").readlink().name.startswith(prefix):
            until.wait(timeout=5)
            fsync(fd)
            events.append("synced")
            return
        fsync(fd)

    monkeypatch.setattr(os, "fsync", held)  # as bot.pictures.files calls it


def refused_syncs(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """Each fsync of a file named `prefix…` fails as a failing disk's does."""
    fsync = os.fsync

    def refused(fd: int) -> None:
        if Path(f"/proc/self/fd/{fd}").readlink().name.startswith(prefix):
            raise OSError(errno.EIO, "I/O error")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", refused)


async def test_a_downloaded_result_is_synced_beside_its_upload_and_recorded_after(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result's sync held its upload back; it now runs beside the upload, and the outputs' rows
    still wait for it."""
    events: list[str] = []
    uploading = threading.Event()
    held_syncs(monkeypatch, "output-", uploading, events)  # the code before synced, then uploaded
    rows_at_upload = []
    deliver = harness.delivery.deliver

    async def watched(job: Job, files: Sequence[ResultFile]) -> Receipt:
        events.append("upload")
        rows_at_upload.append(await harness.repo.outputs(job.id))
        uploading.set()
        return await deliver(job, files)

    monkeypatch.setattr(harness.delivery, "deliver", watched)
    job = await harness.submit(order(static_files.add("a.png", png(40, 30)), recipe=True))
    done = await harness.service.wait_settled(job.id)
    assert done.state.value == "done"
    assert events == ["upload", "synced"]
    assert rows_at_upload == [[]]
    [output] = await harness.repo.outputs(job.id)
    assert output.discord_url is not None


async def test_a_kept_input_is_synced_beside_the_submit_and_named_after(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept input was synced before the submit; it now syncs while the host takes the run, and
    the job's row names the kept file only once it is synced."""
    events: list[str] = []
    submitted = threading.Event()
    held_syncs(monkeypatch, "input-", submitted, events)  # the code before synced, then submitted
    named_at_submit = []
    submit = RunflowProvider.submit

    async def watched(provider: RunflowProvider, request: EditRequest, **kwargs: Any) -> Run:
        run = await submit(provider, request, **kwargs)
        events.append("submitted")
        job = await harness.repo.get(request.job_id)
        assert job is not None
        named_at_submit.append([item.get("path") for item in job.inputs])
        submitted.set()
        return run

    monkeypatch.setattr(RunflowProvider, "submit", watched)
    source = png(40, 30)
    job = await harness.submit(order(static_files.add("a.png", source)))
    done = await harness.service.wait_settled(job.id)
    assert done.state.value == "done"
    assert events == ["submitted", "synced"]
    assert named_at_submit == [[None]]
    [kept] = done.inputs
    assert await asyncio.to_thread(Path(kept["path"]).read_bytes) == source


class _TracedTx:
    """A transaction that notes the statements it runs."""

    def __init__(self, tx: Tx, seen: list[str]) -> None:
        self._tx, self._seen = tx, seen

    def __getattr__(self, name: str) -> Any:
        run = getattr(self._tx, name)
        if name not in ("execute", "executemany", "fetch_one", "fetch_all"):
            return run

        async def traced(sql: str, *args: Any) -> Any:
            self._seen.append(" ".join(sql.split()))
            return await run(sql, *args)

        return traced


def traced_transactions(monkeypatch: pytest.MonkeyPatch, db: Database) -> list[list[str]]:
    """The statements of each transaction the store runs from now on, on either backend."""
    transactions: list[list[str]] = []
    begin = db.transaction

    @contextlib.asynccontextmanager
    async def transaction() -> AsyncIterator[Any]:
        async with begin() as tx:
            transactions.append([])
            yield _TracedTx(tx, transactions[-1])

    monkeypatch.setattr(db, "transaction", transaction)
    return transactions


async def test_the_move_to_running_names_the_kept_inputs_in_the_same_write(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept inputs were named by a transaction of their own just before the move to
    `running`: one of the eleven an edit took, each a turn of the store's write lock."""
    transactions = traced_transactions(monkeypatch, harness.db)
    job = await harness.submit(order(static_files.add("a.png", png(40, 30))))
    done = await harness.service.wait_settled(job.id)
    assert done.state.value == "done"
    naming = [statements for statements in transactions if any("inputs = ?" in sql for sql in statements)]
    assert len(naming) == 1
    [[move]] = naming
    assert "state = ?" in move
    assert [Path(item["path"]).name for item in done.inputs] == ["input-0.png"]


async def test_an_input_the_disk_will_not_sync_is_left_unnamed_and_the_edit_goes_on(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync fails once the run is at the host: the edit is delivered (the host has what it
    needs), and the row does not name a file that may not be on disk."""
    refused_syncs(monkeypatch, "input-")
    job = await harness.submit(order(static_files.add("a.png", png(40, 30))))
    done = await harness.service.wait_settled(job.id)
    assert done.state.value == "done"
    assert [item.get("path") for item in done.inputs] == [None]


async def test_a_result_the_disk_will_not_sync_is_still_delivered_and_charged_once(
    harness: Harness,
    static_files: StaticFiles,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sync fails while the result is being posted: the member has it, so the edit ends
    delivered and charged, not failed and refunded after the result was shown."""
    refused_syncs(monkeypatch, "output-")
    job = await harness.submit(order(static_files.add("a.png", png(40, 30))))
    done = await harness.service.wait_settled(job.id)
    assert done.state.value == "done"
    assert done.credits_charged == done.credits_estimated > 0
    assert len(harness.delivery.delivered) == 1
    [output] = await harness.repo.outputs(job.id)
    assert output.discord_url is not None
    assert "could not be synced" in caplog.text


async def test_a_normalised_input_is_written_only_for_a_link_and_never_synced(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phone photo turned by its EXIF orientation is sent normalised. Without a public URL the
    host gets the bytes, so the normalised copy was written (and synced) for nothing; with one,
    the host reads it as written."""
    written: list[tuple[str, bool]] = []
    write = FileStore.write

    async def watched(self: FileStore, path: Path, data: bytes, *, durable: bool = True) -> None:
        written.append((path.name, durable))
        await write(self, path, data, durable=durable)

    monkeypatch.setattr(FileStore, "write", watched)
    job = await harness.submit(order(static_files.add("a.jpg", turned_jpeg(6), "image/jpeg")))
    done = await harness.service.wait_settled(job.id)
    assert done.state.value == "done"
    assert [name for name, _ in written if "ready" in name] == []
