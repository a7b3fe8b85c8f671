"""`python -m bot edit`: one edit without Discord, to check a key and a host from a terminal.

It goes through the same router and host clients as the bot, but keeps nothing in the
database: no job, no credits. Images may be local files (sent as bytes: multipart for OpenAI,
data URIs for the others) or http(s) URLs (passed to the host as they are).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.jobs.results import MAX_OUTPUT_BYTES
from bot.pictures import images, masks
from bot.pictures.files import DownloadError, FileStore
from bot.providers.base import (
    EditRequest,
    EditResult,
    ImageRef,
    OutputImage,
    Provider,
    ProviderError,
    Run,
    RunState,
    RunStatus,
)
from bot.providers.router import build_router
from bot.providers.settings import ProvidersSettings
from bot.runtime.config import Settings


@dataclass(frozen=True)
class OneShot:
    images: list[str]
    prompt: str
    out: Path
    mask: str | None = None
    quality: str = "high"
    size: str = "auto"
    count: int = 1
    host: str | None = None


def _reference(source: str) -> ImageRef:
    if source.startswith(("http://", "https://")):
        return ImageRef(filename=source.rsplit("/", 1)[-1] or "image", url=source)
    path = Path(source)
    data = path.read_bytes()
    ready = images.normalize(data)  # upright, one frame, 8-bit: what the bot itself would send
    return ImageRef(filename=path.name, data=ready.data or data, content_type=ready.info.content_type)


def _mask(source: str, first: ImageRef) -> ImageRef:
    """A local mask in the common convention at the first image's size; a URL goes as it is."""
    mask = _reference(source)
    if mask.data is None or first.data is None:
        return mask
    info = images.inspect(first.data)
    converted = masks.to_bw_mask(mask.data, (info.width, info.height))
    return ImageRef(filename="mask.png", data=converted, content_type="image/png")


def _progress(text: str) -> None:
    sys.stderr.write(f"\r{text:<70}")
    sys.stderr.flush()


def _output_path(out: Path, index: int, count: int, extension: str) -> Path:
    """`--out result.png` names the file (numbered when several); otherwise it is a directory."""
    if out.suffix:
        return out if count == 1 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")
    return out / f"retouch-{index + 1}.{extension}"


async def run_oneshot(settings: Settings, order: OneShot) -> list[Path]:
    """Submit, wait with a progress line, download; raises ProviderError or DownloadError."""
    providers = settings.providers
    if order.host is not None:
        providers = providers.model_copy(update={"order": [order.host]})
    references = [_reference(source) for source in order.images]
    request = EditRequest(
        job_id=0,
        prompt=order.prompt,
        images=references,
        mask=_mask(order.mask, references[0]) if order.mask else None,
        quality=order.quality,
        image_size=order.size,
        count=order.count,
    )
    async with aiohttp.ClientSession() as session:
        router = build_router(providers, session)
        started = time.monotonic()
        run = await router.submit(request)
        state = await wait_until_final(
            router,
            run,
            providers,
            lambda state: _progress(f"{run.host}: {state.status.value}, {time.monotonic() - started:.0f} s"),
        )
        sys.stderr.write("\n")
        if state.status is not RunStatus.SUCCEEDED or state.result is None:
            raise state.error or ProviderError(f"the run ended {state.status.value}", host=run.host)
        return await _save(state.result, order.out, session)


async def wait_until_final(
    provider: Provider, run: Run, settings: ProvidersSettings, seen: Callable[[RunState], None]
) -> RunState:
    """Poll until the run ends, backing off from `poll_interval` to `poll_interval_max` as the
    job runner does, so a check from the terminal loads the host no more than an edit would."""
    interval = settings.poll_interval
    while True:
        state = await provider.status(run)
        seen(state)
        if state.status.final:
            return state
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, settings.poll_interval_max)


async def output_bytes(output: OutputImage, session: aiohttp.ClientSession, store: FileStore) -> bytes:
    """One output's bytes, inline or downloaded (capped); raises DownloadError."""
    if output.data is not None:
        return output.data
    if output.url is not None:
        return await store.download(session, output.url, max_bytes=MAX_OUTPUT_BYTES)
    raise DownloadError("the host listed an output without a URL or data")


async def _save(result: EditResult, out: Path, session: aiohttp.ClientSession) -> list[Path]:
    store = FileStore(out.parent if out.suffix else out)
    written = []
    for index, output in enumerate(result.images):
        data = await output_bytes(output, session, store)
        info = images.inspect(data)
        path = _output_path(out, index, len(result.images), info.extension)
        await store.write(path, data)
        written.append(path)
    return written
