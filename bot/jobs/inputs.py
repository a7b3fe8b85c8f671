"""Getting a job's images to the host: fetched from Discord once, checked, kept, and sent in
the form each host can use.

Every reference is downloaded once (size-capped, Discord's CDN only, no redirects), checked
for what it really is (from its header and structure, decoded only when those leave doubt or it
needs converting), and kept by job id. The host then gets the Discord URL while it is valid
and the file needs no change; otherwise a signed, expiring link from `web.public_url` to the
kept (normalised) file, or the bytes where no public URL is configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yarl

from bot.edits import InputImage
from bot.pictures import image_costs, images, masks, memory
from bot.pictures.files import FileStore
from bot.pictures.links import FileLinks
from bot.providers.base import ImageRef
from bot.runtime.clock import SYSTEM_CLOCK, Clock
from storage.jobs import Job

MAX_INPUT_BYTES = 25 * 1024 * 1024
# Use the kept bytes instead of a Discord URL that expires within this long.
URL_MARGIN = timedelta(minutes=30)
A = TypeVar("A")
B = TypeVar("B")


def url_expired(url: str, now: datetime | None = None) -> bool:
    """Discord's attachment URLs carry their expiry as `ex=<hex unix time>`; others never expire."""
    expires = yarl.URL(url).query.get("ex")
    if expires is None:
        return False
    try:
        moment = datetime.fromtimestamp(int(expires, 16), UTC)
    except (ValueError, OverflowError, OSError):
        return True  # unreadable, or beyond what a date can hold: a crafted URL, not Discord's
    return moment - URL_MARGIN <= (now or SYSTEM_CLOCK.now())


@dataclass(frozen=True)
class Prepared:
    references: list[ImageRef]
    mask: ImageRef | None
    kept: Sequence[Mapping[str, Any]]
    """The job's inputs with where each is now kept, to write back to the job."""
    kept_mask: Mapping[str, Any] | None
    """The job's mask, likewise."""
    first_size: tuple[int, int] | None
    """The first reference's upright width and height, which an "auto" size above 1K follows."""
    unsynced: Sequence[Path] = ()
    """Kept files written but not yet synced: `kept` may name them once they are (`FileStore.sync`)."""


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results, once both have ended; a failure of either is raised only then, so nothing
    is still writing into a job's folder when its failure removes the folder."""
    one, two = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(one, BaseException):
        raise one
    if isinstance(two, BaseException):
        raise two
    return one, two


class InputPreparer:
    def __init__(
        self,
        *,
        files: FileStore,
        session: aiohttp.ClientSession,
        cdn_hosts: Collection[str] | None,
        links: FileLinks | None,
        clock: Clock,
    ) -> None:
        self._files = files
        self._session = session
        self._cdn_hosts = cdn_hosts
        self._links = links
        self._clock = clock

    async def prepare(self, job: Job) -> Prepared:
        """Fetch each reference (Discord's CDN only) to disk once, check what it really is, and
        choose how the host gets it: the Discord URL when the file is fine as it is and the URL
        is still valid, else the bytes (normalised: upright, one frame, 8-bit). The mask, if
        any, is converted to the common convention (white = may change) at the first image's
        size; hosts that want another convert from that."""
        references = []
        kept = []
        unsynced: list[Path] = []
        first_size: tuple[int, int] | None = None
        for idx, item in enumerate(InputImage(**entry) for entry in job.inputs):
            stored, data = await self._load(item)
            # Kept while it is checked, on two threads: the check is mostly checksums and the
            # keep a write, both outside the GIL. The header (read inline, in microseconds) names
            # the file, and refuses what the check would refuse first. The keep's sync, slower
            # than the download on a local disk, is left to run beside the submit: the host reads
            # the Discord URL, the bytes, or our link to the file as written.
            place = self._files.input_path(job.id, idx, images.header(data).info.extension)
            ready, kept_at = await _both(self._ready(data), self._keep(stored, data, place, durable=False))
            if stored is None:
                unsynced.append(kept_at)
            kept.append(replace(item, path=str(kept_at)).to_dict())
            references.append(await self._reference(job.id, idx, item, kept_at, data, ready))
            first_size = first_size or (ready.info.width, ready.info.height)
        if job.mask is None or first_size is None:
            return Prepared(references, None, kept, None, first_size, unsynced)
        mask = InputImage(**job.mask)
        stored, data = await self._load(mask)
        # The conversion decodes the mask and refuses what is not one, so it also tells what
        # the file is: one decode, not an inspect and then a conversion.
        converted = await memory.shared().run(image_costs.bw_mask_cost, masks.to_bw_mask, data, first_size)
        info = (await asyncio.to_thread(images.header, data)).info
        kept_at = await self._keep(stored, data, self._files.mask_path(job.id, 0, info.extension))
        path = self.mask_ready(job.id)
        await self._files.write(path, converted)
        ready_mask = self._bytes_or_link(mask.filename, path, converted, "image/png")
        kept_mask = replace(mask, path=str(kept_at)).to_dict()
        return Prepared(references, ready_mask, kept, kept_mask, first_size, unsynced)

    @staticmethod
    async def _ready(data: bytes) -> images.Normalized:
        """The upload as the host will get it; decoded only when its header and structure
        cannot vouch for it as it is, which a plain upload's can in a fraction of a decode."""
        info = await asyncio.to_thread(images.sendable, data)
        if info is not None:
            return images.Normalized(info, info, None)
        return await memory.shared().run(image_costs.normalize_cost, images.normalize, data)

    def mask_ready(self, job_id: int) -> Path:
        """The job's mask as every host gets it first: greyscale, white = may change, at the first
        image's upright size."""
        return self._files.job_dir(job_id) / "mask-ready.png"

    async def _load(self, item: InputImage) -> tuple[Path | None, bytes]:
        """The image's bytes and where they are kept: from disk when kept, else fetched."""
        stored = Path(item.path) if item.path else None
        if stored is not None and await asyncio.to_thread(stored.exists):
            return stored, await self._files.read(stored)
        data = await self._files.download(
            self._session, item.url, max_bytes=MAX_INPUT_BYTES, allowed_hosts=self._cdn_hosts
        )
        return None, data

    async def _keep(self, stored: Path | None, data: bytes, place: Path, *, durable: bool = True) -> Path:
        """Where the checked bytes are kept: where they were when that is a job's folder (a Retry
        reuses its parent's files), else written at `place` now, under the disk cap (synced when
        `durable`); a staged file (a painted mask) is moved there, synced before it goes."""
        if stored is not None and self._files.holds(stored):
            return stored
        await self._files.write(place, data, durable=durable or stored is not None)
        if stored is not None:
            await self._files.discard(stored)  # only a staged file is removed
        return place

    async def _reference(
        self, job_id: int, idx: int, item: InputImage, stored: Path, data: bytes, ready: images.Normalized
    ) -> ImageRef:
        """The Discord URL when it still works and the file needs no change; otherwise our own
        signed link to the (normalised) bytes where callbacks are public, else the bytes."""
        content_type = ready.info.content_type
        if ready.data is None and not url_expired(item.url, self._clock.now()):
            return ImageRef(filename=item.filename, url=item.url, content_type=content_type)
        upload, path = data, stored
        if ready.data is not None:
            upload = ready.data
            path = self._files.job_dir(job_id) / f"input-{idx}-ready.{ready.info.extension}"
            if self._links is not None:
                # For the host to read through our link; not synced, as nothing else reads it
                # and a job submitted again after a crash prepares it again.
                await self._files.write(path, upload, durable=False)
        return self._bytes_or_link(item.filename, path, upload, content_type)

    def _bytes_or_link(self, filename: str, path: Path, data: bytes, content_type: str) -> ImageRef:
        """A signed link to the kept file where hosts can reach us, else the bytes themselves."""
        if self._links is None:
            return ImageRef(filename=filename, data=data, content_type=content_type)
        # A Retry reuses its parent's kept file, which lives in the parent's folder.
        link = self._links.url_for(int(path.parent.name), path.name)
        return ImageRef(filename=filename, url=link, content_type=content_type)
