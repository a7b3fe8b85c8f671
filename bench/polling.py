"""Host polling load with callbacks off: status requests per run per 5 s, 200 runs of 60 s.

Two measurements:

1. simulated — the real `JobService` polling code (started as after a restart, so `recover()`
   hands it 200 running jobs) runs on an event loop with a virtual clock that jumps straight to
   the next timer, against an in-memory host whose runs finish 60 s after they start. The
   configured defaults are used (`providers.poll_interval`, `poll_interval_max`, ×1.5 backoff).
   Only the host is faked; the schedule is the product's. 200 runs × 60 s take a second or two.
2. real, scaled — the whole bot against the world's Runflow fake, with every duration divided by
   10 (poll interval, its maximum, and the run length: 6 s). The schedule is scale-free, so it
   should make the same number of polls per run as the simulation; this confirms it does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import selectors
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.core import Config, Report, Row, say
from bench.harness import World, retouch_settings, start_retouch, time_settlements, wide_open
from bot.jobs import JobService, JobSettings
from bot.pictures.files import FileStore
from bot.providers.base import EditResult, OutputImage, Run, RunState, RunStatus
from bot.providers.settings import ProvidersSettings
from storage.jobs import EditOptions, Job, JobKind, JobState

NAME = "polling"
RUN_SECONDS = 60.0
WINDOW = 5.0
SCALE = 10.0


# -------------------------------------------------------------------------------- virtual time


class _JumpingSelector(selectors.DefaultSelector):
    """Never waits: when nothing is ready, the loop's clock jumps by the timeout it asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if not ready:
            if timeout is None:
                raise RuntimeError("virtual clock: nothing is scheduled, the simulation would hang")
            self.now += max(0.0, timeout)
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual: sleeps and timeouts cost no real time."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


# -------------------------------------------------------------------------------- the fakes around JobService


def _default_for(annotation: str, name: str) -> Any:
    """A plausible value for a Job field from its annotation (kept generic as Job grows)."""
    if "None" in annotation:
        return None
    if annotation.startswith("datetime"):
        return datetime.now(UTC)
    if annotation.startswith("JobState"):
        return JobState.RUNNING
    if annotation.startswith("JobKind"):
        return JobKind.EDIT
    if annotation.startswith("EditOptions"):
        return EditOptions()
    if annotation.startswith(("Mapping", "dict")):
        return {}
    if annotation.startswith(("Sequence", "list")):
        return []
    if annotation.startswith("bool"):
        return False
    if annotation.startswith("int"):
        return 0
    if annotation.startswith("str"):
        return ""
    raise TypeError(f"no default for Job.{name}: {annotation}")


def running_job(job_id: int) -> Job:
    values = {f.name: _default_for(str(f.type), f.name) for f in dataclasses.fields(Job)}
    values.update(
        id=job_id,
        user_id=1000 + job_id,
        channel_id=1,
        state=JobState.RUNNING,
        provider="runflow",
        run_id=f"run-{job_id}",
        submitted_at=datetime.now(UTC),
    )
    return Job(**values)


class _Repo:
    """The few JobRepository calls recovery and polling make; runs stay RUNNING until moved."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = {job.id: job for job in jobs}
        self.unknown: set[str] = set()

    async def final_with_open_hold(self) -> list[Job]:
        return []

    async def open_jobs(self) -> list[Job]:
        return list(self.jobs.values())

    async def get(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)

    async def move(self, job_id: int, expected: Any, to: JobState, **fields: Any) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        moved = self.jobs[job_id] = dataclasses.replace(job, state=to, **fields)
        # Recovery counts a start by moving a job to its own state; any other move means the run
        # is over, and the measurement stops there (delivery is not what is measured).
        return moved if to is job.state else None

    def __getattr__(self, name: str) -> Any:
        """Any other call (recovery grows new steps) finds nothing to do: an empty list."""
        self.unknown.add(name)

        async def nothing(*args: Any, **kwargs: Any) -> list[Any]:
            return []

        return nothing


class _Host:
    """Runs that finish `duration` seconds (loop time) after polling starts; counts every status."""

    name = "runflow"

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.polls: defaultdict[str, list[float]] = defaultdict(list)
        self.started: float | None = None
        self.done: set[str] = set()
        self.total = 0
        self.all_done = asyncio.Event()

    async def status(self, run: Run) -> RunState:
        now = asyncio.get_running_loop().time()
        if self.started is None:
            self.started = now
        self.polls[run.run_id].append(now)
        if now - self.started < self.duration:
            return RunState(RunStatus.RUNNING)
        self.done.add(run.run_id)
        if len(self.done) >= self.total:
            self.all_done.set()
        return RunState(
            RunStatus.SUCCEEDED, result=EditResult(images=[OutputImage(url="http://127.0.0.1/x")])
        )

    async def cancel(self, run: Run) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the simulated host does not implement {name}")


class _Delivery:
    async def show_progress(self, job: Job, progress: Any) -> None:
        return None

    async def deliver(self, job: Job, files: Any) -> Any:
        raise AssertionError("not reached")

    async def report_failure(self, job: Job, message: str) -> None:
        return None


def simulate(runs: int, duration: float, interval: float, interval_max: float, files: Path) -> dict[str, Any]:
    """200 runs through JobService's own polling, on the virtual clock; polls per run."""

    async def main() -> dict[str, Any]:
        host = _Host(duration)
        host.total = runs
        repo = _Repo([running_job(n) for n in range(1, runs + 1)])
        service = JobService(
            JobSettings(
                usd_per_image={},
                concurrency=1,
                poll_interval=interval,
                poll_interval_max=interval_max,
                deadline=duration * 100,
            ),
            repo=repo,  # type: ignore[arg-type]
            provider=host,
            credits=None,  # type: ignore[arg-type]
            files=FileStore(files),
            session=None,  # type: ignore[arg-type]
        )
        await service.start(_Delivery())
        await asyncio.wait_for(host.all_done.wait(), duration * 10)
        await service.stop()
        counts = [len(times) for times in host.polls.values()]
        first = next(iter(host.polls.values()))
        start = host.started or 0.0
        return {
            "runs": len(counts),
            "polls_per_run_mean": statistics.fmean(counts),
            "polls_per_run_min": min(counts),
            "polls_per_run_max": max(counts),
            "schedule_of_one_run_s": [round(t - start, 2) for t in first],
            "repository_calls_not_faked": sorted(repo.unknown),
        }

    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# -------------------------------------------------------------------------------- the real, scaled run


async def real_run(
    cfg: Config, runs: int, interval: float, interval_max: float, seconds: float
) -> dict[str, Any]:
    poll = {
        "RETOUCH_PROVIDERS__POLL_INTERVAL": str(interval),
        "RETOUCH_PROVIDERS__POLL_INTERVAL_MAX": str(interval_max),
    }
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as data:
        async with await World.start() as world:
            running = await start_retouch(
                retouch_settings(world, Path(data), {**wide_open(concurrency=runs), **poll})
            )
            settled = time_settlements(running.bot)
            try:
                members = await world.members(runs)
                await world.cdn("photo", 512, 512)
                await world.call("host", delay=seconds)
                await world.edit(members, "photo")
                await settled.wait_quiet(runs, quiet=seconds * 3 + 15)
                stats = await world.stats(polls=True)
            finally:
                await running.stop()
    per_run = [info["polls"] for info in stats["poll_times"].values()]
    return {
        "runs": len(per_run),
        "polls_per_run_mean": statistics.fmean(per_run),
        "polls_per_run_min": min(per_run),
        "polls_per_run_max": max(per_run),
        "host_requests": stats["runflow"],
    }


def _rate(polls_per_run: float, seconds: float) -> float:
    return polls_per_run / (seconds / WINDOW)


async def run(cfg: Config) -> Report:
    defaults = ProvidersSettings()
    interval, interval_max = defaults.poll_interval, defaults.poll_interval_max
    runs = 200
    report = Report(NAME)
    say(f"simulated: {runs} runs of {RUN_SECONDS:g} s, poll {interval:g} s → max {interval_max:g} s")
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as files:
        sim = await asyncio.to_thread(simulate, runs, RUN_SECONDS, interval, interval_max, Path(files))
    real_runs, scale = cfg.pick(10, 200), cfg.pick(20.0, SCALE)
    say(f"real, scaled ÷{scale:g}: {real_runs} runs of {RUN_SECONDS / scale:g} s")
    real = await real_run(cfg, real_runs, interval / scale, interval_max / scale, RUN_SECONDS / scale)
    simulated_rate = _rate(sim["polls_per_run_mean"], RUN_SECONDS)
    real_rate = _rate(real["polls_per_run_mean"], RUN_SECONDS)  # scale-free: same windows per run
    report.rows = [
        Row(
            NAME,
            f"status polls per run per 5 s, {runs} runs of 60 s",
            simulated_rate,
            "req/run/5s",
            goal="≤ 1 per run per 5 s",
            met=simulated_rate <= 1.0,
            label="simulated clock",
        ),
        Row(
            NAME,
            f"… confirmed by a real run, {real_runs} runs, all times ÷{scale:g}",
            real_rate,
            "req/run/5s",
            simulated_rate,
            goal="(should match the simulation)",
            label=f"scaled ÷{scale:g}",
        ),
    ]
    report.details = {
        "poll_interval_s": interval,
        "poll_interval_max_s": interval_max,
        "backoff": "×1.5 after each poll that finds the run unfinished",
        "simulated": sim,
        "real_scaled": real,
        "note": "the figure counts status requests (GET /v1/runs/{id}); each run also costs one submit "
        "and one result download, i.e. +2 requests per run, +0.17 per run per 5 s over 60 s",
    }
    return report
