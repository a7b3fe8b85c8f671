"""The workers: claim the next job in line and carry it through submit → poll → deliver.

Each step is written to the job row before the side effect that depends on it, so whatever
line a crash lands on, recovery finds the job in a state it knows how to finish. Every step
re-reads or moves the row (compare-and-set), so a job cancelled meanwhile stops at its next step.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.edits import BOT_ERROR, STORAGE_FULL, Progress
from bot.jobs.core import Core
from bot.jobs.endings import Endings, reference, run_of
from bot.jobs.inputs import InputPreparer, Prepared
from bot.jobs.places import Places
from bot.jobs.results import Results
from bot.jobs.wakeups import RUNS
from bot.pictures import images, sizes
from bot.pictures.files import DownloadError, StorageFull
from bot.providers.base import (
    EditRequest,
    EditResult,
    ErrorKind,
    InvalidRequest,
    ProviderError,
    RunFailed,
    RunStatus,
    Unavailable,
)
from storage.db import database_errors
from storage.jobs import Job, JobState

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 10.0


def _unusable(problem: Exception) -> str:
    """Mask problems are already whole sentences for the member; file problems are a clause."""
    text = str(problem)
    return text if text.endswith(".") else f"An image could not be used: {text}; try another one."


class Runner:
    def __init__(
        self, core: Core, endings: Endings, inputs: InputPreparer, results: Results, places: Places
    ) -> None:
        self._core = core
        self._places = places
        self._endings = endings
        self._inputs = inputs
        self._results = results
        self._wakeups: dict[int, asyncio.Event] = {}
        # The jobs this process is working on now, which a run's wake-up concerns.
        self._working: set[int] = set()
        # Submits sent to a host whose answer is not recorded yet (see `land`).
        self._landing: set[asyncio.Future[Job | None]] = set()

    async def work(self) -> None:
        """One worker: forever, the next job in line."""
        while True:
            job = await self._core.line.take()
            # Told beside the job, not before it: awaited, a claim from a long line waited for
            # a reading of the line and up to three progress edits before its own work began.
            self._places.moved()
            await self.held(job.id)

    async def held(self, job_id: int) -> None:
        """Process a job this process has claimed, then hand back its claim. A process that
        dies (or is cancelled) meanwhile never hands it back: its lease lapses instead, and
        whoever takes it over finishes it."""
        await self.guarded(job_id)
        await self._core.leases.release(job_id)

    async def run_update(self, host: str, run_id: str) -> bool:
        """A host says a run changed: the process working on it polls it now rather than at
        the next interval (see `bot.jobs.wakeups` for when that process is another one).

        The callback's own body is never trusted for the outcome; the poll asks the host
        through its authenticated API, so a forged or replayed callback costs one request.
        False when no running job has that run.
        """
        job = await self._core.repo.find_by_run(host, run_id)
        if job is None or job.state is not JobState.RUNNING:
            return False
        await self._core.wakeups.notify(RUNS, str(job.id))
        return True

    def wake_run(self, payload: str) -> None:
        """A run changed: poll it now, if this process is working on its job. Every process
        hears the notice; the others are not holding the job and ignore it. An empty payload
        (notices may have been lost) polls every run this process is working on."""
        for job_id in [int(payload)] if payload else list(self._working):
            if job_id in self._working:
                self._wakeups.setdefault(job_id, asyncio.Event()).set()

    async def guarded(self, job_id: int) -> None:
        """Process a job; whatever escapes the processing ends the job rather than stranding it.

        An unexpected exception would happen again on every try (a crafted input, a full disk),
        so the job fails at once, free, and the traceback is logged once with the reference the
        member is given. Only a database error leaves the job as it is: the failure could not be
        recorded either, and recovery, which counts its starts, takes it up again.
        """
        self._working.add(job_id)
        try:
            await self._process(job_id)
        except asyncio.CancelledError:
            raise
        except database_errors():
            log.exception("job %d: the database failed; it is left for recovery", job_id)
        except StorageFull as exc:
            log.error("job %d: %s", job_id, exc)
            await self._give_up(job_id, Unavailable(str(exc), host="retouch"), STORAGE_FULL)
        except Exception as exc:
            tag = reference(job_id)
            log.exception("job %d crashed (reference %s); it is failed and its credits released", job_id, tag)
            error = RunFailed(f"unexpected {type(exc).__name__} (reference {tag})", host="retouch")
            await self._give_up(job_id, error, BOT_ERROR.format(reference=tag))
        finally:
            self._working.discard(job_id)
            self._wakeups.pop(job_id, None)

    async def _give_up(self, job_id: int, error: ProviderError, member_text: str) -> None:
        try:
            job = await self._core.repo.get(job_id)
            if job is not None:
                await self._endings.fail(job, error, member_text=member_text)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %d could not be failed; it is left for recovery", job_id)

    async def _process(self, job_id: int) -> None:
        job = await self._core.repo.get(job_id)
        if job is None or job.state.final:
            return
        if job.state is JobState.QUEUED:
            job = await self._submit(job)
        if job is not None and job.state is JobState.RUNNING:
            ended = await self._poll(job)
            if ended is not None:
                await self._results.deliver(*ended)
        elif job is not None and job.state is JobState.DELIVERING:
            await self._results.deliver(job)

    async def _submit(self, job: Job) -> Job | None:
        core, fail = self._core, self._endings.fail
        moved = await core.repo.move(
            job.id, [JobState.QUEUED], JobState.SUBMITTING, attempts=job.attempts + 1
        )
        if moved is None:
            return None
        await core.delivery.show_progress(moved, Progress(JobState.SUBMITTING))
        options = moved.options
        try:
            prepared = await self._inputs.prepare(moved)
        except (DownloadError, images.ImageProblem) as exc:
            await fail(moved, InvalidRequest(str(exc), host="discord"), member_text=_unusable(exc))
            return None
        try:
            dimensions = sizes.dimensions(options.image_size, options.resolution, prepared.first_size)
        except ValueError as exc:
            await fail(moved, InvalidRequest(str(exc), host="retouch"))
            return None
        request = EditRequest(
            job_id=moved.id,
            prompt=moved.prompt,
            images=prepared.references,
            mask=prepared.mask,
            quality=options.quality,
            image_size=options.image_size,
            resolution=options.resolution,
            count=options.count,
            output_format=options.output_format,
            dimensions=dimensions,
        )
        # Shielded: a stop (a deploy, a SIGTERM) that cancels this worker while the host is
        # answering would leave a run the host bills but no row names, and the job, back in line,
        # would be submitted again. The submit lands on its own; `land` lets it finish.
        landing = asyncio.ensure_future(self._submit_and_record(moved, request, prepared))
        self._landing.add(landing)
        landing.add_done_callback(self._landing.discard)
        return await asyncio.shield(landing)

    async def _submit_and_record(self, moved: Job, request: EditRequest, prepared: Prepared) -> Job | None:
        core = self._core
        # The kept inputs are synced while the host takes the run, and named in the row by the
        # move to `running`.
        keeping = asyncio.ensure_future(self._kept_inputs(moved.id, prepared))
        started = core.clock.monotonic()
        try:
            run = await core.provider.submit(request, callback_url=core.settings.callback_url)
        except ProviderError as error:
            self._observe(error.host or "unknown", "submit", started, error)
            await keeping
            await self._endings.fail(moved, error)
            return None
        except BaseException:
            await asyncio.gather(keeping, return_exceptions=True)
            raise
        kept = await keeping
        self._observe(run.host, "submit", started)
        running = await core.repo.move(
            moved.id,
            [JobState.SUBMITTING],
            JobState.RUNNING,
            provider=run.host,
            run_id=run.run_id,
            run_data=run.data,
            submitted_at=core.clock.now(),
            **kept,
        )
        if running is None:
            # Cancelled while the submit was in flight (maybe in another process): the run
            # exists, so stop it, and show no more of its progress.
            core.delivery.cancelled(moved)
            await self._endings.stop_run(run)
        return running

    async def _kept_inputs(self, job_id: int, prepared: Prepared) -> dict[str, Any]:
        """The row's fields that name the kept inputs, once they are on disk for good, for a
        Retry after Discord's links expired; written by the move to `running`, not in a
        transaction of their own; none when the disk refused them: the run is at the host
        already, and a Retry fetches the input from Discord again."""
        try:
            await self._core.files.sync(prepared.unsynced)
        except OSError as error:
            log.warning("job %d: its inputs could not be synced (%s); they are not kept", job_id, error)
            return {}
        return {"inputs": prepared.kept, "mask": prepared.kept_mask}

    async def land(self, within: float) -> None:
        """At a stop, once the workers are cancelled: let the submits already at a host record
        their runs (for up to `within` seconds), so whoever finishes those jobs polls the runs
        instead of submitting them again. A submit still unanswered then is cancelled."""
        if not self._landing:
            return
        log.info("waiting up to %.0f s for %d submits to be answered", within, len(self._landing))
        _, late = await asyncio.wait(set(self._landing), timeout=within)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _poll(self, job: Job) -> tuple[Job, EditResult] | None:
        """Ask the host until the run ends, backing off, or sooner when a callback says so."""
        core, fail = self._core, self._endings.fail
        deadline = core.settings.deadline
        run = run_of(job)
        started = job.submitted_at or job.created_at
        interval = core.settings.poll_interval
        last_shown = 0.0
        while True:
            current = await core.repo.get(job.id)
            if current is None or current.state is not JobState.RUNNING:
                if current is not None and current.state is JobState.CANCELLED:
                    core.delivery.cancelled(current)  # maybe in another process
                return None  # cancelled (or finished by a callback) while we waited
            elapsed = (self._core.clock.now() - started).total_seconds()
            if elapsed > deadline:
                await self._endings.stop_run(run)
                await fail(job, Unavailable(f"no result after {deadline:g} s", host=run.host))
                return None
            asked = self._core.clock.monotonic()
            try:
                state = await core.provider.status(run)
            except ProviderError as error:
                self._observe(run.host, "status", asked, error)
                if error.kind not in (ErrorKind.UNAVAILABLE, ErrorKind.RATE_LIMITED):
                    await fail(job, error)
                    return None
                log.warning("job %d: polling %s failed (%s); will retry", job.id, run.host, error.message)
            else:
                self._observe(run.host, "status", asked)
                if state.status.final:
                    return await self._finish_run(job, state.result, state.error, state.status)
            if self._core.clock.monotonic() - last_shown >= PROGRESS_INTERVAL:
                last_shown = self._core.clock.monotonic()
                await core.delivery.show_progress(job, Progress(JobState.RUNNING, elapsed=elapsed))
            wakeup = self._wakeups.setdefault(job.id, asyncio.Event())
            try:
                await asyncio.wait_for(wakeup.wait(), interval)
            except TimeoutError:
                interval = min(interval * 1.5, core.settings.poll_interval_max)
            wakeup.clear()

    async def _finish_run(
        self, job: Job, result: EditResult | None, error: ProviderError | None, status: RunStatus
    ) -> tuple[Job, EditResult] | None:
        """The job moved on to delivery, with its result; None when it ended here."""
        if result is None:
            failure = error or Unavailable(f"the run ended {status}", host=job.provider or "")
            await self._endings.fail(job, failure)
            return None
        moved = await self._core.repo.move(
            job.id, [JobState.RUNNING], JobState.DELIVERING, usd_micros=result.usd_micros or 0
        )
        return None if moved is None else (moved, result)

    def _observe(self, host: str, operation: str, started: float, error: ProviderError | None = None) -> None:
        metrics = self._core.metrics
        metrics.host_latency.labels(host, operation).observe(self._core.clock.monotonic() - started)
        if error is not None:
            metrics.host_errors.labels(host, error.kind.value).inc()
