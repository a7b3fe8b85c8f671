"""Inputs and outputs kept on disk by job id, within a size cap.

Discord's attachment URLs and the hosts' result URLs both expire, so anything a later Refine,
Retry or recovery may need is copied here first. Downloads stream to a temporary file and are
renamed into place, so a crash never leaves a half-written file under its final name.

The cap is kept at every write, not only by the periodic prune: members decide how much is
written (every edit keeps its inputs), so a burst of edits could otherwise fill the disk between
two prunes. The store's size is measured once and then tracked in memory, so keeping the cap
costs no walk of the tree per write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import aiohttp
import yarl

# A download is written to its file in batches of at least this many bytes: one hop to the
# writing thread per batch, not per piece the network delivered. Batches of 256 KiB, read on
# while the last one was being written, held 45 MB more at the peak of 200 4K results
# downloading at once than blocks of 256 KiB cut from aiohttp's buffer did; at 128 KiB the peak
# is below that, with as many hops.
CHUNK = 128 * 1024


class DownloadError(Exception):
    """A file could not be fetched; the message names the reason, never the signed URL."""


class StorageFull(Exception):
    """A file would not fit: the store's cap, or the disk itself, is full."""


InUse = Callable[[], Awaitable[Collection[int]]]
"""The job ids whose folders must stay (unfinished jobs and what they build on)."""

Finish = Callable[[BinaryIO], Awaitable[None]]
"""A last change to a downloaded file, open for reading and writing, before it is named."""


class FileStore:
    def __init__(self, root: Path, *, max_bytes: int | None = None, in_use: InUse | None = None) -> None:
        self.root = root
        self._max_bytes = max_bytes
        self._in_use = in_use
        # Bytes kept per job folder, measured at the first write that needs it.
        self._sizes: dict[int, int] | None = None
        self._total = 0
        self._lock = asyncio.Lock()

    def job_dir(self, job_id: int) -> Path:
        return self.root / f"{job_id // 1000:04d}" / str(job_id)

    def staging_path(self, name: str) -> Path:
        """Where a file waits for the job it will belong to (a painted mask, before its edit
        exists); the job's preparation moves it into the job's folder, and `prune` drops what
        waited longer than the retention."""
        return self.root / "staging" / name

    def holds(self, path: Path) -> bool:
        """Whether `path` is inside a job's folder, where the cap and retention count it."""
        return self._job_of(path) is not None

    def staged(self, path: Path) -> bool:
        return path.parent == self.root / "staging"

    async def discard(self, path: Path) -> None:
        """Remove a staged file once it is kept in a job's folder, or was refused; anything else
        is left alone."""
        if self.staged(path):
            await asyncio.to_thread(path.unlink, missing_ok=True)

    def output_path(self, job_id: int, idx: int, extension: str) -> Path:
        return self.job_dir(job_id) / f"output-{idx}.{extension}"

    def input_path(self, job_id: int, idx: int, extension: str) -> Path:
        return self.job_dir(job_id) / f"input-{idx}.{extension}"

    def mask_path(self, job_id: int, idx: int, extension: str) -> Path:
        return self.job_dir(job_id) / f"mask-{idx}.{extension}"

    async def prune(self, *, older_than: float) -> int:
        """Delete the folders of finished jobs past retention, then the oldest until under the
        cap; returns how many. Folders in use are never touched."""
        async with self._lock:
            sizes = await self._measured()
            in_use = await self._protected()
            candidates = [job for job in sizes if job not in in_use]
            aged = await asyncio.to_thread(self._older, candidates, older_than)
            for job in aged:
                await self._remove(job)
            await asyncio.to_thread(self._drop_staged, older_than)
            over = 0 if self._max_bytes is None else self._total - self._max_bytes
            return len(aged) + (await self._evict(over, in_use) if over > 0 else 0)

    async def delete_job(self, job_id: int) -> None:
        """Drop a job's files at once: a failed or cancelled edit is never built on."""
        async with self._lock:
            await self._remove(job_id)

    async def _claim(self, path: Path, size: int) -> None:
        """Count `size` more bytes under `path`'s job before they are written, first deleting the
        oldest finished jobs' folders if the cap needs it; StorageFull when even that is not enough
        (deleting nothing then, as it would not help)."""
        if self._max_bytes is None:
            self._count(path, size)
            return
        async with self._lock:
            sizes = await self._measured()
            over = self._total + size - self._max_bytes
            if over > 0:
                writer = self._job_of(path)
                in_use = {*await self._protected(), *([] if writer is None else [writer])}
                freeable = sum(used for job, used in sizes.items() if job not in in_use)
                if freeable < over:
                    raise StorageFull(
                        f"the bot's files would exceed storage.max_gib ({self._max_bytes} bytes)"
                    )
                await self._evict(over, in_use)
            self._count(path, size)

    def _count(self, path: Path, size: int) -> None:
        """Add (or with a negative size, take away) bytes kept under `path`'s job."""
        if self._sizes is None:
            return
        job = self._job_of(path)
        if job is not None:
            before = self._sizes.get(job, 0)
            self._sizes[job] = max(0, before + size)
            self._total += self._sizes[job] - before

    def _job_of(self, path: Path) -> int | None:
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return None
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None

    async def _measured(self) -> dict[int, int]:
        if self._sizes is None:
            self._sizes = await asyncio.to_thread(self._measure)
            self._total = sum(self._sizes.values())
        return self._sizes

    def _measure(self) -> dict[int, int]:
        return {
            int(folder.name): _size(folder)
            for group in self.root.glob("*")
            if group.is_dir()
            for folder in group.iterdir()
            if folder.is_dir() and folder.name.isdigit()
        }

    async def _protected(self) -> set[int]:
        return set(await self._in_use()) if self._in_use is not None else set()

    async def _evict(self, needed: int, in_use: Collection[int]) -> int:
        """Delete the oldest (lowest id) folders not in use until `needed` bytes are freed."""
        assert self._sizes is not None
        removed = 0
        for job in sorted(job for job in self._sizes if job not in in_use):
            if needed <= 0:
                break
            needed -= self._sizes.get(job, 0)
            await self._remove(job)
            removed += 1
        return removed

    async def _remove(self, job_id: int) -> None:
        await asyncio.to_thread(shutil.rmtree, self.job_dir(job_id), ignore_errors=True)
        if self._sizes is not None:
            self._total -= self._sizes.pop(job_id, 0)

    def _drop_staged(self, older_than: float) -> None:
        for staged in (self.root / "staging").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                if staged.stat().st_mtime < older_than:
                    staged.unlink()

    def _older(self, jobs: Collection[int], older_than: float) -> list[int]:
        """Of `jobs`, those whose folder was last changed before `older_than` (a Unix time)."""
        aged = []
        for job in jobs:
            try:
                if self.job_dir(job).stat().st_mtime < older_than:
                    aged.append(job)
            except FileNotFoundError:
                aged.append(job)  # gone already: only the count remains to drop
        return aged

    async def download(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        max_bytes: int,
        timeout: float = 120.0,
        allowed_hosts: Collection[str] | None = None,
    ) -> bytes:
        """The body of `url`, refusing more than `max_bytes` while it streams, and any host
        outside `allowed_hosts` when given (redirects are not followed, so they cannot escape)."""
        chunks = [chunk async for chunk in _stream(session, url, max_bytes, timeout, allowed_hosts)]
        return b"".join(chunks)

    async def download_to(
        self,
        session: aiohttp.ClientSession,
        url: str,
        path: Path,
        *,
        max_bytes: int,
        timeout: float = 120.0,
        durable: bool = True,
        finish: Finish | None = None,
        finish_room: int = 0,
        watch: Callable[[bytes], object] | None = None,
    ) -> int:
        """Stream `url` into `path` (atomically, as `write` does) without holding it in memory;
        returns its size. For results, which can be large and many at once. Each chunk is
        counted against the cap before it is written. `durable=False` skips the fsync, for a
        file that is rewritten (and then synced) right after.

        `finish`, when given, changes the downloaded file (open for reading and writing) before
        it is synced and named, adding at most `finish_room` bytes: what the file must carry
        (a result's recipe) is written with it, not by writing it all again. `watch`, when given,
        sees each block on the thread that writes it (a check of the bytes as they go by)."""
        temporary = path.with_suffix(path.suffix + ".part")
        handle = await asyncio.to_thread(_open_part, temporary)
        claimed = 0
        # A batch is written on a thread while the next one arrives: at most one write in
        # flight, so at most two batches held. The pieces are written as they came, not joined
        # into blocks first (a copy of every byte on the event loop).
        writing: asyncio.Future[None] | None = None
        try:
            with _disk_full_as_storage_full():
                async for batch, size in _batches(_stream(session, url, max_bytes, timeout, None), CHUNK):
                    await self._claim(path, size)
                    claimed += size
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(asyncio.to_thread(_write_batch, handle, batch, watch))
                if writing is not None:
                    await writing
                if finish is not None:
                    await self._claim(path, finish_room)
                    claimed += finish_room
                    await finish(handle)
                size, replaced = await asyncio.to_thread(_name, handle, durable, temporary, path)
        except BaseException:
            if writing is not None:
                await asyncio.gather(writing, return_exceptions=True)
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(temporary.unlink, missing_ok=True)
            self._count(path, -claimed)
            raise
        self._count(path, size - claimed - replaced)
        return size

    async def write(self, path: Path, data: bytes, *, durable: bool = True) -> None:
        """Write `path` atomically, within the cap (StorageFull when it cannot be made to fit);
        rewriting a file counts only the change. `durable=False` leaves the sync to `sync`."""
        existing = await asyncio.to_thread(_size_of, path)
        await self._claim(path, len(data) - existing)
        try:
            with _disk_full_as_storage_full():
                replaced = await asyncio.to_thread(_write_atomic, path, data, durable)
        except BaseException:
            self._count(path, existing - len(data))
            raise
        self._count(path, existing - replaced)

    async def rewrite(self, path: Path, change: Callable[[bytes], bytes], *, most_added: int) -> None:
        """Replace `path` atomically with `change(its bytes)`: read, changed and written on one
        thread, so no copy waits between the steps holding memory. `most_added` bytes are
        counted against the cap first, and the count corrected once the size is known."""
        await self._claim(path, most_added)
        try:
            with _disk_full_as_storage_full():
                added = await asyncio.to_thread(_rewrite_atomic, path, change)
        except BaseException:
            self._count(path, -most_added)
            raise
        self._count(path, added - most_added)

    async def rename(self, source: Path, target: Path) -> None:
        """Move a kept file to its final name; a file it replaces stops counting."""
        self._count(target, -await asyncio.to_thread(_replace, source, target))

    async def read(self, path: Path) -> bytes:
        return await asyncio.to_thread(path.read_bytes)

    async def sync(self, paths: Sequence[Path]) -> None:
        """Put files written with `durable=False` on disk for good (one hop to a thread for all)."""
        if paths:
            await asyncio.to_thread(_sync_all, paths)


async def _stream(
    session: aiohttp.ClientSession,
    url: str,
    max_bytes: int,
    timeout: float,
    allowed_hosts: Collection[str] | None,
) -> AsyncIterator[bytes]:
    if allowed_hosts is not None and yarl.URL(url).host not in allowed_hosts:
        raise DownloadError("the image is not on Discord's CDN")
    too_large = f"the file is larger than {max_bytes // (1024 * 1024)} MiB"
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=allowed_hosts is None
        ) as response:
            if response.status != 200:
                raise DownloadError(f"the file server answered HTTP {response.status}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise DownloadError(too_large)
            received = 0
            # The pieces as the network delivered them: re-cut into blocks of a set size, each
            # block was a copy, about 1.2 ms of the event loop's time an edit (1 MP in and out).
            async for piece, _ in response.content.iter_chunks():
                if not piece:
                    continue
                received += len(piece)
                if received > max_bytes:
                    raise DownloadError(too_large)
                yield piece
    except TimeoutError as exc:
        raise DownloadError("the download timed out") from exc
    except aiohttp.ClientError as exc:
        raise DownloadError(f"the download failed ({exc.__class__.__name__})") from exc


@contextmanager
def _disk_full_as_storage_full() -> Iterator[None]:
    """The disk filling up is the same condition as the cap being reached, and told the same."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull("the disk is full") from exc
        raise


async def _batches(pieces: AsyncIterator[bytes], least: int) -> AsyncIterator[tuple[list[bytes], int]]:
    """The pieces in lists of at least `least` bytes (the last one whatever is left), each with
    its size."""
    batch: list[bytes] = []
    held = 0
    async for piece in pieces:
        batch.append(piece)
        held += len(piece)
        if held >= least:
            yield batch, held
            batch, held = [], 0
    if batch:
        yield batch, held


def _write_batch(handle: BinaryIO, batch: Sequence[bytes], watch: Callable[[bytes], object] | None) -> None:
    for piece in batch:
        if watch is not None:
            watch(piece)
        handle.write(piece)


def _open_part(temporary: Path) -> BinaryIO:
    temporary.parent.mkdir(parents=True, exist_ok=True)
    return temporary.open("w+b")


def _name(handle: BinaryIO, durable: bool, temporary: Path, path: Path) -> tuple[int, int]:
    """Close a download's temporary file (synced, if `durable`) and rename it to `path`; returns
    its size and that of the file it replaced. One step on a thread, not three: each costs the loop
    a hand-off and a wake-up, and the worker a wait for the GIL (up to 5 ms while the loop is busy)."""
    size = handle.seek(0, os.SEEK_END)
    handle.flush()
    if durable:
        os.fsync(handle.fileno())
    handle.close()
    return size, _replace(temporary, path)


def _sync_all(paths: Sequence[Path]) -> None:
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _size(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in folder.iterdir() if entry.is_file())


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _replace(source: Path, target: Path) -> int:
    """Rename `source` over `target`; returns the size of the file it replaced (0 if none)."""
    replaced = _size_of(target)
    source.replace(target)
    return replaced


def _rewrite_atomic(path: Path, change: Callable[[bytes], bytes]) -> int:
    """Rewrite `path` through `change`; returns how many bytes it grew by."""
    changed = change(path.read_bytes())
    return len(changed) - _write_atomic(path, changed)


def _write_atomic(path: Path, data: bytes, durable: bool = True) -> int:
    """Write through a temporary file; returns the size of the file it replaced (0 if none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".part")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return _replace(temporary, path)
