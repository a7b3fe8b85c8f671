"""A finished run's results: downloaded to disk, laid over the original through the mask,
given their recipe (bot.jobs.recipe), fitted under the upload limit, posted, and only then charged.

The outputs' rows are written once their files are synced to disk, so a crash while posting
finds them again at recovery instead of asking the host (whose result URLs may have expired). A
download's sync, the slowest step between the host and Discord on a local disk (a few
milliseconds for a 1-megapixel PNG, more than its download), runs beside the upload: the rows
follow it, and only a crash in those first milliseconds of a post asks the host again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp

from bot.edits import NSFW_BLOCKED, DeliveryFailed, Receipt, ResultFile
from bot.jobs import recipe
from bot.jobs.core import Core
from bot.jobs.endings import Endings, run_of
from bot.jobs.inputs import InputPreparer
from bot.pictures import composite, image_costs, images, memory
from bot.pictures.files import DownloadError
from bot.providers.base import ContentRejected, EditResult, ProviderError, Unavailable
from storage.jobs import Job, JobOutput, JobState, NewOutput

log = logging.getLogger(__name__)

# Seconds to wait before trying again when Discord answers a result with a 5xx.
DELIVERY_RETRIES = (1.0, 5.0, 20.0)
# Seconds to wait before fetching a finished edit's results again after a failed download.
DOWNLOAD_RETRIES = (1.0, 3.0)
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
# More than a recipe adds to a file: the prompt twice (as text and in the JSON, escaped).
STAMP_ROOM = 256 * 1024


async def _stamp_download(stamped: recipe.Recipe, handle: BinaryIO) -> None:
    """The recipe spliced into a downloaded result, never re-encoded, so the pixels stay as made:
    a PNG's goes before its end, touching nothing else; any other file is stamped whole."""
    if await asyncio.to_thread(recipe.stamp_end, handle, stamped):
        return
    size = await asyncio.to_thread(handle.seek, 0, os.SEEK_END)
    async with _stamp_held(size):
        await asyncio.to_thread(recipe.stamp_whole, handle, stamped)


@contextlib.asynccontextmanager
async def _stamp_held(size: int) -> AsyncIterator[None]:
    """A file stamped whole and its stamped copy count against the memory budget: 200 results
    stamped at once held 30 MB each at 4K."""
    share = await memory.shared().acquire(2 * size)
    try:
        yield
    finally:
        memory.shared().release(share)


@dataclass
class Fetched:
    """A result's outputs on disk, before their rows are written."""

    outputs: list[NewOutput] = field(default_factory=list)
    unsynced: list[Path] = field(default_factory=list)
    """Files still to be synced before the rows may name them."""


class Results:
    def __init__(
        self, core: Core, endings: Endings, inputs: InputPreparer, session: aiohttp.ClientSession
    ) -> None:
        self._core = core
        self._endings = endings
        self._inputs = inputs
        self._session = session

    async def fetch(self, job: Job, result: EditResult | None = None) -> Fetched | None:
        """Download the outputs to disk; when a crash lost them, ask the host for the result again.

        None when the job had to be failed instead (the member has been told).
        """
        for pause in (*DOWNLOAD_RETRIES, None):
            try:
                if result is None:
                    result = await self._core.provider.result(run_of(job))
                fetched = await self._store(job, result)
            except ProviderError as error:
                await self._endings.fail(job, error)
                return None
            except (DownloadError, images.ImageProblem) as exc:
                # The host finished the edit: a dropped download is worth a few more tries, with
                # the result asked for again in case its short-lived URLs have changed.
                if pause is None or isinstance(exc, images.ImageProblem):
                    log.warning("job %d: fetching the result failed: %s", job.id, exc)
                    await self._endings.fail(
                        job,
                        Unavailable(f"the result could not be downloaded: {exc}", host=job.provider or ""),
                    )
                    return None
                log.info("job %d: fetching the result failed (%s); trying again in %g s", job.id, exc, pause)
                await asyncio.sleep(pause)
                result = None
            else:
                return fetched
        return None

    async def _store(self, job: Job, result: EditResult) -> Fetched:
        """Every output to disk (all but the plain downloads synced); their rows are written
        together once all are synced (`_record`): a crash between two downloads leaves no rows,
        so recovery fetches them all again rather than a part."""
        files = self._core.files
        stamped = recipe.of(job) if job.options.recipe else None
        outputs = Fetched()
        for idx, output in enumerate(result.images):
            # Results stream to disk rather than sit in memory: there may be hundreds at 4K.
            fetched = files.output_path(job.id, idx, "download")
            # A download is stamped as it is written, unless the mask's composite may encode it
            # again; bytes the host sent, or a composite, are stamped once written.
            stamp_later = stamped
            # A download without a mask is delivered as the host sent it (plus our recipe): its
            # bytes are checked as they are written, not read back for the check.
            checked = None
            # Every write but a download's syncs the file; a download is synced beside the upload.
            synced = True
            if output.data is not None:
                await files.write(fetched, output.data)
            elif output.url is not None:
                synced = False
                stamp_now = stamped if job.mask is None else None
                stamp_later = None if stamp_now is not None else stamped
                checked = images.PngCheck() if job.mask is None else None
                await files.download_to(
                    self._session,
                    output.url,
                    fetched,
                    max_bytes=MAX_OUTPUT_BYTES,
                    durable=False,
                    finish=None if stamp_now is None else functools.partial(_stamp_download, stamp_now),
                    finish_room=STAMP_ROOM,
                    watch=None if checked is None else checked.feed,
                )
            else:
                raise DownloadError("the host listed an output without a URL or data")
            kept = await self._keep_outside_the_mask(job, fetched)
            synced = synced or kept is not None
            if stamp_later is not None:
                synced = True
                size = (await asyncio.to_thread(fetched.stat)).st_size
                async with _stamp_held(size):
                    await files.rewrite(
                        fetched, functools.partial(recipe.stamp, recipe=stamp_later), most_added=STAMP_ROOM
                    )
            info = await asyncio.to_thread(functools.partial(images.probe, fetched, checked=checked))
            if info is None:
                # A burst of 4K results decoded at once was most of the bot's peak memory; the
                # budget lets as many run as their pixels allow.
                info = await memory.shared().run(image_costs.inspect_cost, images.inspect, fetched)
            path = files.output_path(job.id, idx, info.extension)
            await files.rename(fetched, path)
            if not synced:
                outputs.unsynced.append(path)
            outputs.outputs.append(
                NewOutput(
                    idx=idx,
                    source_url=output.url,
                    path=str(path),
                    content_type=info.content_type,
                    width=info.width,
                    height=info.height,
                    size=info.size,
                    nsfw=result.nsfw,
                    mask_kept=kept is not None,
                    changed_outside=kept,
                )
            )
        return outputs

    async def _keep_outside_the_mask(self, job: Job, fetched: Path) -> float | None:
        """With a mask, the output laid over the original through it, in place of what the host
        sent (see `bot.pictures.composite`); returns the share of pixels outside the mask that the host had
        changed, or None when there is no mask or the output's shape differs and stands as made."""
        original = job.inputs[0].get("path") if job.inputs else None
        mask = self._inputs.mask_ready(job.id)
        if job.mask is None or original is None or not await asyncio.to_thread(mask.exists):
            return None
        done = await memory.shared().run(
            image_costs.composite_cost, composite.composite, Path(original), fetched, mask
        )
        if done.data is None:
            log.info(
                "job %d: the output's shape differs from the original's; it is delivered as made", job.id
            )
            return None
        await self._core.files.write(fetched, done.data)
        log.info(
            "job %d: kept the original outside the mask (the host changed %.1f%% there)",
            job.id,
            done.changed_outside * 100,
        )
        return done.changed_outside

    async def deliver(self, job: Job, result: EditResult | None = None) -> None:
        """Post the job's outputs and settle it: the outputs recorded before a crash, else those
        of `result` (asked of the host again when not given), fetched now."""
        outputs: Sequence[JobOutput | NewOutput] = await self._core.repo.outputs(job.id)
        if outputs:
            await self._show(job, outputs)
            return
        fetched = await self.fetch(job, result)
        if fetched is None:
            return
        recording = asyncio.ensure_future(self._record(job.id, fetched))
        try:
            if not fetched.unsynced:
                await recording
            await self._show(job, fetched.outputs, recording)
        finally:
            # Not left running when the post fails or the worker is stopped.
            await asyncio.gather(recording, return_exceptions=True)

    async def _record(self, job_id: int, fetched: Fetched) -> None:
        """The outputs' rows, once their files are on disk for good. A sync the disk refuses
        comes while the result is being posted: the member gets it and it is charged as
        delivered, and its rows are written all the same, as the files read back as written."""
        try:
            await self._core.files.sync(fetched.unsynced)
        except OSError as error:
            log.warning("job %d: its result could not be synced (%s)", job_id, error)
        await self._core.repo.add_outputs(job_id, fetched.outputs)

    async def _show(
        self,
        job: Job,
        outputs: Sequence[JobOutput | NewOutput],
        recording: asyncio.Future[None] | None = None,
    ) -> None:
        """Post the outputs and settle, or fail the job; either once the outputs' rows are
        written (`recording`, under way beside the post)."""
        core = self._core
        options = job.options
        limit = options.upload_limit
        flagged = any(output.nsfw for output in outputs)
        shown = options.shows_nsfw() if flagged else True
        if shown is None:
            if recording is not None:
                await recording
            await self._endings.fail(
                job,
                ContentRejected("the host flagged the result as NSFW", host=job.provider or ""),
                member_text=NSFW_BLOCKED,
            )
            return
        files = []
        for output in outputs:
            assert output.path is not None
            path = Path(output.path)
            info = images.ImageInfo(
                output.content_type or "image/png", output.width or 0, output.height or 0, output.size or 0
            )
            shrunk = info.size > limit
            if shrunk:
                # Only a result over the limit is read back into memory, to be re-encoded.
                exif = recipe.exif(recipe.of(job)) if options.recipe else None
                fitted = await memory.shared().run(
                    image_costs.fit_file_cost, images.fit_file, path, limit, exif=exif
                )
                info = fitted.info
                path = path.with_name(f"fitted-{output.idx}.{info.extension}")
                await core.files.write(path, fitted.data)
            files.append(
                ResultFile(
                    path=path,
                    filename=f"retouch-{job.id}-{output.idx + 1}.{info.extension}",
                    content_type=info.content_type,
                    width=info.width,
                    height=info.height,
                    size=info.size,
                    shrunk=shrunk,
                    spoiler=flagged and not shown,
                )
            )
        receipt = await self._post(job, files)
        if recording is not None:
            await recording
        if not isinstance(receipt, Receipt):
            await self._endings.fail(job, receipt)
            return
        # The delivery's records, its charge and its end commit together: one write, not three
        # (on PostgreSQL, one wait for the server's log instead of three), and no crash between
        # them for recovery to finish.
        async with core.repo.transaction():
            await core.repo.set_output_urls(job.id, receipt.urls)
            charged = await core.credits.settle(
                job.id, delivered_images=len(files), usd_micros=job.usd_micros or None
            )
            done = await core.repo.move(
                job.id,
                [JobState.DELIVERING],
                JobState.DONE,
                result_message_id=receipt.message_id,
                completed_at=self._core.clock.now(),
            )
        core.metrics.credits_spent.inc(charged)
        core.metrics.usd_spent.inc(job.usd_micros / 1_000_000)
        if done is not None:
            log.info("job %d delivered as message %d", job.id, receipt.message_id)
            self._endings.finished(done)

    async def _post(self, job: Job, files: Sequence[ResultFile]) -> Receipt | Unavailable:
        """Post the result, waiting out Discord's own outages a few times; else why the edit must
        be failed instead."""
        pauses = iter(DELIVERY_RETRIES)
        while True:
            try:
                return await self._core.delivery.deliver(job, files)
            except DeliveryFailed as exc:
                pause = next(pauses, None)
                if not exc.transient or pause is None:
                    return Unavailable(f"the result could not be posted: {exc}", host="discord")
                log.warning("job %d: delivery failed (%s); retrying in %g s", job.id, exc, pause)
                await asyncio.sleep(pause)
