"""Inputs and outputs kept on disk by job id.

Discord's attachment URLs and the hosts' result URLs both expire, so anything a later Refine,
Retry or recovery may need is copied here first. Downloads stream to a temporary file and are
renamed into place, so a crash never leaves a half-written file under its final name.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import aiohttp
import yarl

CHUNK = 256 * 1024


class DownloadError(Exception):
    """A file could not be fetched; the message names the reason, never the signed URL."""


class StorageFull(Exception):
    """A file would not fit: the store's cap, or the disk itself, is full."""


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def job_dir(self, job_id: int) -> Path:
        return self.root / f"{job_id // 1000:04d}" / str(job_id)

    def output_path(self, job_id: int, idx: int, extension: str) -> Path:
        return self.job_dir(job_id) / f"output-{idx}.{extension}"

    def input_path(self, job_id: int, idx: int, extension: str) -> Path:
        return self.job_dir(job_id) / f"input-{idx}.{extension}"

    def mask_path(self, job_id: int, idx: int, extension: str) -> Path:
        return self.job_dir(job_id) / f"mask-{idx}.{extension}"

    def prune(self, *, older_than: float, max_bytes: int) -> int:
        """Delete job folders past retention, then the oldest until under the cap; returns how
        many. Synchronous (walks the disk): run it in a thread."""
        folders = [folder for group in self.root.glob("*") if group.is_dir() for folder in group.iterdir()]
        aged = sorted(
            (folder.stat().st_mtime, folder, _size(folder)) for folder in folders if folder.is_dir()
        )
        total = sum(size for _, _, size in aged)
        removed = 0
        for modified, folder, size in aged:
            if modified >= older_than and total <= max_bytes:
                break
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed += 1
        return removed

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
        self, session: aiohttp.ClientSession, url: str, path: Path, *, max_bytes: int, timeout: float = 120.0
    ) -> int:
        """Stream `url` into `path` (atomically, as `write` does) without holding it in memory;
        returns its size. For results, which can be large and many at once."""
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        temporary = path.with_suffix(path.suffix + ".part")
        handle = await asyncio.to_thread(temporary.open, "wb")
        size = 0
        try:
            async for chunk in _stream(session, url, max_bytes, timeout, None):
                await asyncio.to_thread(handle.write, chunk)
                size += len(chunk)
            await asyncio.to_thread(_finish, handle)
        except BaseException:
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(temporary.unlink, missing_ok=True)
            raise
        await asyncio.to_thread(temporary.replace, path)
        return size

    async def write(self, path: Path, data: bytes) -> None:
        with _disk_full_as_storage_full():
            await asyncio.to_thread(_write_atomic, path, data)

    async def read(self, path: Path) -> bytes:
        return await asyncio.to_thread(path.read_bytes)


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
            async for chunk in response.content.iter_chunked(CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise DownloadError(too_large)
                yield chunk
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


def _finish(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _size(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in folder.iterdir() if entry.is_file())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".part")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
