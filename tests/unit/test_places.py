"""Places in line: one reading of the line per burst of new jobs and claims, each new job told
its place once, and the first few told theirs only when it changed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

from bot.edits import Progress
from bot.jobs.core import Core
from bot.jobs.endings import Endings
from bot.jobs.inputs import InputPreparer
from bot.jobs.places import Places
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
        return waiting(job_id)


class Delivery:
    def __init__(self) -> None:
        self.shown: list[tuple[int, int | None]] = []

    async def show_progress(self, job: Job, progress: Progress) -> None:
        self.shown.append((job.id, progress.queue_position))


def places_over(line: Line, delivery: Delivery, tasks: Supervisor) -> Places:
    return Places(cast(Core, SimpleNamespace(line=line, repo=Repo(), delivery=delivery)), tasks)


def waiting(job_id: int) -> Job:
    return cast(Job, SimpleNamespace(id=job_id, state=JobState.QUEUED))


async def test_a_burst_of_claims_reads_the_line_twice_and_shows_each_place_once() -> None:
    line, delivery, tasks = Line([5, 6, 7, 8]), Delivery(), Supervisor()
    places = places_over(line, delivery, tasks)
    places.moved()
    await line.first_read.wait()
    for _ in range(9):  # nine more claims while the first reading is under way: one more reading
        places.moved()
    line.now = [6, 7, 8]
    line.go_on.set()
    await tasks.settle(5)
    assert line.readings == 2
    assert delivery.shown == [(5, 1), (6, 2), (7, 3), (6, 1), (7, 2), (8, 3)]
    places.moved()  # the line has not moved: nothing new to tell
    await tasks.settle(5)
    assert line.readings == 3
    assert len(delivery.shown) == 6


async def test_a_burst_of_new_jobs_is_told_its_places_from_one_reading() -> None:
    """Each job put in line read the whole line for its own place: in a burst of a hundred, a
    hundred readings of up to a hundred rows, under the database's one lock."""
    line, delivery, tasks = Line([1]), Delivery(), Supervisor()
    places = places_over(line, delivery, tasks)
    places.joined(waiting(1))
    await line.first_read.wait()
    for job_id in range(2, 101):
        places.joined(waiting(job_id))
    line.now = [job_id for job_id in range(2, 101) if job_id != 50]  # workers took 1, and 50 first
    line.go_on.set()
    await tasks.settle(5)
    assert line.readings == 2
    assert delivery.shown == [(1, 1), *((job_id, place) for place, job_id in enumerate(line.now, start=1))]


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
    places = places_over(line, delivery, tasks)
    runner = Runner(
        cast(Core, SimpleNamespace(line=line)),
        cast(Endings, None),
        cast(InputPreparer, None),
        cast(Results, None),
        places,
    )
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
