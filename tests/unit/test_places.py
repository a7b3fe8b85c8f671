"""Places in line as the workers announce them: one reading of the line per burst of claims, and
a member told a place only when it changed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

from bot.edits import Progress
from bot.jobs.core import Core
from bot.jobs.endings import Endings
from bot.jobs.inputs import InputPreparer
from bot.jobs.results import Results
from bot.jobs.runner import Runner
from bot.runtime.tasks import Supervisor
from storage.jobs import Job, JobState


class Line:
    """The line's order, held at the first reading until the test lets it go."""

    def __init__(self, order: list[int]) -> None:
        self.now = order
        self.readings = 0
        self.first_read = asyncio.Event()
        self.go_on = asyncio.Event()

    async def order(self, *, first: int | None = None) -> list[int]:
        self.readings += 1
        order = list(self.now)[:first]
        self.first_read.set()
        await self.go_on.wait()
        return order


class Repo:
    async def get(self, job_id: int) -> Job:
        return cast(Job, SimpleNamespace(id=job_id, state=JobState.QUEUED))


class Delivery:
    def __init__(self) -> None:
        self.shown: list[tuple[int, int | None]] = []

    async def show_progress(self, job: Job, progress: Progress) -> None:
        self.shown.append((job.id, progress.queue_position))


def runner_over(line: Line, delivery: Delivery, tasks: Supervisor | None = None) -> Runner:
    core = cast(Core, SimpleNamespace(line=line, repo=Repo(), delivery=delivery))
    return Runner(
        core, cast(Endings, None), cast(InputPreparer, None), cast(Results, None), tasks or Supervisor()
    )


async def test_a_burst_of_claims_reads_the_line_twice_and_shows_each_place_once() -> None:
    line, delivery = Line([5, 6, 7, 8]), Delivery()
    runner = runner_over(line, delivery)
    first = asyncio.ensure_future(runner._announce_places())
    await line.first_read.wait()
    # Nine more claims while the first reading is under way: they ask for one more reading, and
    # return at once (the bound only ends the wait when they read the line each, as they did).
    await asyncio.wait([asyncio.ensure_future(runner._announce_places()) for _ in range(9)], timeout=5)
    line.now = [6, 7, 8]
    line.go_on.set()
    await first
    assert line.readings == 2
    assert delivery.shown == [(5, 1), (6, 2), (7, 3), (6, 1), (7, 2), (8, 3)]
    await runner._announce_places()  # the line has not moved: nothing new to tell
    assert line.readings == 3
    assert len(delivery.shown) == 6


async def test_a_claimed_job_starts_while_the_places_are_still_being_announced() -> None:
    """A worker read the line and told up to three members their places before starting the
    job it had claimed; in a burst, every job waited for that."""
    line, delivery = Line([5, 6, 7, 8]), Delivery()
    claimed = [cast(Job, SimpleNamespace(id=4))]

    async def take() -> Job:
        if claimed:
            return claimed.pop()
        await asyncio.Event().wait()  # nothing more in line
        raise AssertionError

    line.take = take  # type: ignore[attr-defined]
    tasks = Supervisor()
    runner = runner_over(line, delivery, tasks)
    started = asyncio.Event()

    async def held(job_id: int) -> None:
        started.set()

    runner.held = held  # type: ignore[method-assign]
    worker = asyncio.ensure_future(runner.work())
    try:
        await asyncio.wait_for(started.wait(), 5)
        assert not line.go_on.is_set()  # the announcement's reading is still held
        line.go_on.set()
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await tasks.stop()
