"""Host polling load with callbacks off: status requests per run per 5 s, 200 runs of 60 s.

Two measurements:

1. simulated — the whole `JobService` (started as after a restart, so recovery finds 200 running
   jobs and claims them) on a real SQLite store with the product's own repositories, on an event
   loop with a virtual clock that jumps straight to the next timer, against an in-memory host
   whose runs finish 60 s after they start; the finished runs are downloaded, delivered and
   settled as in production. The configured defaults are used (`providers.poll_interval`,
   `poll_interval_max`, ×1.5 backoff). Only the host and Discord are faked; the schedule, the
   claims and the leases are the product's. 200 runs × 60 s take a few seconds.

   The product's clock (`bot.runtime.clock`), which stamps the rows and dates the leases, reads
   the loop's virtual time (`LoopClock`), so a lease lapses only when virtual time passes it.
   The store works partly on threads (reads outside a transaction, waits for another process's
   lock, checkpoints), as does `asyncio.to_thread`. Such work takes no virtual time: while any is
   pending the loop waits for it in real time and the clock stands still (`_JumpingSelector`).
   Letting the clock leap instead would answer a read at a later virtual instant than it was
   asked at, so polls would drift off their schedule, and a leap past a lease's end would hand a
   job back to recovery and have it polled twice: it is the only way to keep the schedule exact.
2. real, scaled — the whole bot against the world's Runflow fake, with every duration divided by
   10 (poll interval, its maximum, and the run length: 6 s). The schedule is scale-free, so it
   should make the same number of polls per run as the simulation. The bot's own work per edit
   is not scaled, though: a run's first poll comes a little after it started at the host (0.3 s
   of its 6 s, 200 at once on two cores), so some runs are seen finished one poll sooner.
"""

from __future__ import annotations

import asyncio
import selectors
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import aiohttp

from bench.core import Config, Report, Row, say
from bench.harness import World, retouch_settings, start_retouch, time_settlements, wide_open
from bench.images import photo_png
from bot.credits import CreditService
from bot.edits import EditOrder, Progress, Receipt, ResultFile
from bot.jobs import JobService, JobSettings
from bot.pictures.files import FileStore
from bot.providers.base import EditRequest, EditResult, OutputImage, Run, RunState, RunStatus
from bot.providers.settings import ProvidersSettings
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.jobs import EditOptions, Job, JobRepository, JobState, NewJob
from storage.store import open_db

NAME = "polling"
RUN_SECONDS = 60.0
WINDOW = 5.0
SCALE = 10.0
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


# -------------------------------------------------------------------------------- virtual time


class _JumpingSelector(selectors.DefaultSelector):
    """Never waits for time: when nothing is ready, the loop's clock jumps by the timeout it
    asked for. Never jumps while a thread works for the loop (`working`): the thread's end wakes
    the selector (the loop's self-pipe), so it waits for that in real time, the clock still."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.working: set[asyncio.Future[Any]] = set()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if self.working:
            return super().select(None)
        if timeout is None:
            raise RuntimeError("virtual clock: nothing is scheduled, the simulation would hang")
        self.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose `time()` is virtual: sleeps and timeouts cost no real time, and work
    on threads (`run_in_executor`, hence `asyncio.to_thread`) costs no virtual time."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[*Ts], T], *args: *Ts
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        # Until the loop has the answer: a task cancelled meanwhile leaves the thread to finish
        # on its own, and nothing waits for it then.
        self._jumping.working.add(future)
        future.add_done_callback(self._jumping.working.discard)
        return future


def in_virtual_time(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end on a fresh `VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


class LoopClock:
    """The product's clock (`bot.runtime.clock.Clock`) reading the running loop's time, from the
    wall time when it was made: on a `VirtualTimeLoop`, virtual time for every service."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoch = datetime.now(UTC) - timedelta(seconds=loop.time())

    def now(self) -> datetime:
        return self._epoch + timedelta(seconds=self._loop.time())

    def monotonic(self) -> float:
        return self._loop.time()


# -------------------------------------------------------------------------------- the fakes around JobService


class _Host:
    """Runs that finish `duration` seconds (loop time) after polling starts, with a small
    picture as their result; counts every status request."""

    name = "runflow"
    resolutions = frozenset({"1K"})
    image_sizes = frozenset({"auto"})

    def __init__(self, duration: float, runs: int) -> None:
        self.duration = duration
        self.runs = runs
        self.polls: defaultdict[str, list[float]] = defaultdict(list)
        self.started: float | None = None
        self.done: set[str] = set()
        self.all_done = asyncio.Event()
        self._result = EditResult(images=[OutputImage(data=photo_png(64, 64), content_type="image/png")])

    async def submit(self, request: EditRequest, *, callback_url: str | None = None) -> Run:
        raise AssertionError("the runs were submitted before the simulation starts")

    async def status(self, run: Run) -> RunState:
        now = asyncio.get_running_loop().time()
        if self.started is None:
            self.started = now
        self.polls[run.run_id].append(now)
        if now - self.started < self.duration:
            return RunState(RunStatus.RUNNING)
        self.done.add(run.run_id)
        if len(self.done) >= self.runs:
            self.all_done.set()
        return RunState(RunStatus.SUCCEEDED, result=self._result)

    async def result(self, run: Run) -> EditResult:
        raise AssertionError("the status that says a run finished carries its result")

    async def cancel(self, run: Run) -> bool:
        return False

    async def close(self) -> None:
        return None


class _Discord:
    """Delivery that posts nowhere: what Discord does with a result is not what is measured."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    async def show_progress(self, job: Job, progress: Progress) -> None:
        return None

    async def deliver(self, job: Job, files: Sequence[ResultFile]) -> Receipt:
        return Receipt(job.id, [f"https://cdn.example/{file.filename}" for file in files])

    async def report_failure(self, job: Job, message: str) -> None:
        self.failures.append(f"job {job.id}: {message}")

    async def refuse(self, order: EditOrder, message: str) -> None:
        self.failures.append(f"an order of member {order.user_id}: {message}")

    def cancelled(self, job: Job) -> None:
        return None


async def _at_the_host(repo: JobRepository, runs: int, clock: LoopClock) -> list[int]:
    """`runs` jobs submitted and running, as a stop leaves them (their leases handed back)."""
    async with repo.transaction():
        ids = []
        for n in range(1, runs + 1):
            job = await repo.insert(
                NewJob(
                    guild_id=1, channel_id=1, user_id=1000 + n, prompt="p", options=EditOptions(), inputs=[]
                )
            )
            await repo.move(
                job.id,
                [JobState.QUEUED],
                JobState.RUNNING,
                provider=_Host.name,
                run_id=f"run-{job.id}",
                submitted_at=clock.now(),
            )
            ids.append(job.id)
    return ids


def simulate(
    runs: int, duration: float, interval: float, interval_max: float, workdir: Path
) -> dict[str, Any]:
    """`runs` runs through the whole JobService on a SQLite store, on the virtual clock."""

    async def main() -> dict[str, Any]:
        clock = LoopClock(asyncio.get_running_loop())
        host = _Host(duration, runs)
        discord = _Discord()
        db = await open_db(f"sqlite:///{workdir / 'retouch.db'}")
        try:
            repo = JobRepository(db, now=clock.now)
            ids = await _at_the_host(repo, runs, clock)
            async with aiohttp.ClientSession() as session:
                service = JobService(
                    JobSettings(
                        usd_per_image={},
                        concurrency=1,
                        poll_interval=interval,
                        poll_interval_max=interval_max,
                        deadline=duration * 100,
                    ),
                    repo=repo,
                    provider=host,
                    credits=CreditService(db, CreditsSettings(), BudgetSettings(), clock=clock.now),
                    files=FileStore(workdir / "files"),
                    session=session,
                    clock=clock,
                )
                await service.start(discord)
                try:
                    await asyncio.wait_for(host.all_done.wait(), duration * 10)
                    # Then the deliveries: `wait_settled` reads its job every half second, and
                    # 200 of them waiting from the start were most of the simulation's real time.
                    settled = asyncio.gather(*(service.wait_settled(job_id) for job_id in ids))
                    await asyncio.wait_for(settled, duration)
                finally:
                    await service.stop()
            states = await repo.count_by_state()
            jobs = [await repo.get(job_id) for job_id in ids]
        finally:
            await db.close()
        counts = [len(times) for times in host.polls.values()]
        first = next(iter(host.polls.values()))
        start = host.started or 0.0
        return {
            "runs": len(counts),
            "polls_per_run_mean": statistics.fmean(counts),
            "polls_per_run_min": min(counts),
            "polls_per_run_max": max(counts),
            "schedule_of_one_run_s": [round(t - start, 2) for t in first],
            "jobs_by_state": {state.value: count for state, count in states.items()},
            # Each is recovered once, at the start; more means a lease lapsed under it.
            "jobs_recovered_other_than_once": sum(1 for job in jobs if job is None or job.attempts != 1),
            "failures_told": discord.failures[:5],
            "virtual_s": round(asyncio.get_running_loop().time(), 2),
        }

    return in_virtual_time(main())


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
    # The simulated runs start at their first poll; here a run starts at the host before the
    # bot has recorded its submit, and a late first poll can save the last one.
    first_poll_after_start = [
        info["times"][0] - info["started"]
        for info in stats["poll_times"].values()
        if info["times"] and info["started"] is not None
    ]
    return {
        "runs": len(per_run),
        "polls_per_run_mean": statistics.fmean(per_run),
        "polls_per_run_min": min(per_run),
        "polls_per_run_max": max(per_run),
        "first_poll_after_run_started_s_median": statistics.median(first_poll_after_start),
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
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as workdir:
        sim = await asyncio.to_thread(simulate, runs, RUN_SECONDS, interval, interval_max, Path(workdir))
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
