"""Telling waiting members their place in line.

A place comes from a reading of the whole line (its fair order is worked out in Python from
every waiting row, `storage.claims`), and in a burst every job put in line and every claim moves
it. Read for each new job, that was a reading of every waiting row per edit, under SQLite's one
lock, while acknowledgements waited behind it. One reading now serves every job put in line and
every claim made while the last one was read and shown: a new job is told its place once (one a
worker took first is told nothing here: its progress says more), and the first few waiting
members are told whenever their place changed.
"""

from __future__ import annotations

from bot.edits import Progress
from bot.jobs.core import Core
from bot.runtime.tasks import Supervisor
from storage.jobs import Job, JobState

# Places in line worth updating as it moves; further back, the change would be noise.
ANNOUNCED_PLACES = 3


class Places:
    def __init__(self, core: Core, tasks: Supervisor) -> None:
        self._core = core
        self._tasks = tasks
        # Put in line since the last reading, each to be told its place by the next one.
        self._joined: dict[int, Job] = {}
        # The first few places shown by the last reading.
        self._shown: dict[int, int] = {}
        self._announcing = False
        self._moved = False

    def joined(self, job: Job) -> None:
        """A job was put in line: the next reading tells its member where it stands."""
        self._joined[job.id] = job
        self.moved()

    def moved(self) -> None:
        """The line moved: a reading follows, beside the caller (one already under way reads
        once more when it is done)."""
        self._moved = True
        if not self._announcing:
            self._announcing = True
            self._tasks.spawn(self._announce(), name="announce-places")

    async def _announce(self) -> None:
        try:
            while self._moved:
                self._moved = False
                await self._show()
        finally:
            self._announcing = False

    async def _show(self) -> None:
        core = self._core
        joined, self._joined = self._joined, {}
        order = await core.line.order(first=None if joined else ANNOUNCED_PLACES)
        first = {job_id: place for place, job_id in enumerate(order[:ANNOUNCED_PLACES], start=1)}
        told = {job_id: place for job_id, place in first.items() if self._shown.get(job_id) != place}
        told |= {job_id: place for place, job_id in enumerate(order, start=1) if job_id in joined}
        self._shown = first
        for job_id, place in told.items():
            # Still waiting as read; one of the first few may have been cancelled since.
            job = joined.get(job_id) or await core.repo.get(job_id)
            if job is not None and job.state is JobState.QUEUED:
                await core.delivery.show_progress(job, Progress(JobState.QUEUED, queue_position=place))
