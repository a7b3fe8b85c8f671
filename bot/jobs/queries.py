"""Reading jobs for members and admins: one job when the asker may act on it, a member's recent
edits, a chain of edits, a job's outputs, and how busy the line is.

Every read that a member can steer by naming a job goes through `access`, so a job id guessed
or copied from another server answers the same as one that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from bot.jobs import access
from bot.jobs.access import Act, Actor, JobHidden
from storage.jobs import Job, JobOutput, JobRepository, JobState

# A result (or a copy /show posts) is a new message, and its buttons work the moment it is posted,
# a little before the job records it; a press in between waits this long for the record, within
# the 3 s Discord allows for an answer.
RECORD_WAIT = 2.0


class Queries:
    def __init__(self, repo: JobRepository, wait_settled: Callable[[int], Awaitable[Job]]) -> None:
        self._repo = repo
        self._wait_settled = wait_settled
        # Jobs whose copy /show is posting now, with how many copies: the press on a copy reaches
        # the process that posts it (both happen in the copy's server), so waiting here suffices.
        self._showing: dict[int, tuple[asyncio.Event, int]] = {}

    async def get(self, job_id: int) -> Job | None:
        return await self._repo.get(job_id)

    async def acting_on(self, job_id: int, actor: Actor, act: Act, *, message_id: int | None = None) -> Job:
        """The job, when `actor` may do `act` on it (see `access.check`); a button's act is also
        bound to the message it was pressed on, which must be one that carries this job.

        Raises JobHidden or ActRefused, whose messages are what the member is told.
        """
        job = access.check(await self._repo.get(job_id), actor, act, job_id)
        if message_id is None or await self._repo.carries(job_id, message_id):
            return job
        if job.state is JobState.DELIVERING:
            with contextlib.suppress(TimeoutError):
                job = access.check(
                    await asyncio.wait_for(self._wait_settled(job_id), RECORD_WAIT), actor, act, job_id
                )
            if await self._repo.carries(job_id, message_id):
                return job
        elif job_id in self._showing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._showing[job_id][0].wait(), RECORD_WAIT)
            if await self._repo.carries(job_id, message_id):
                return job
        raise JobHidden(job_id)

    @contextlib.asynccontextmanager
    async def showing(self, job: Job) -> AsyncIterator[Callable[[int | None, int], Awaitable[None]]]:
        """Post a copy of the result (/show) inside this block and record it with the function it
        gives: its buttons act on this job too, and a press that comes before the record waits
        for it."""
        done, count = self._showing.get(job.id, (asyncio.Event(), 0))
        self._showing[job.id] = (done, count + 1)

        async def record(channel_id: int | None, message_id: int) -> None:
            await self._repo.add_message(job.id, channel_id, message_id)

        try:
            yield record
        finally:
            done, count = self._showing[job.id]
            if count == 1:
                del self._showing[job.id]
                done.set()
            else:
                self._showing[job.id] = (done, count - 1)

    async def recent(self, user_id: int, guild_id: int | None, *, limit: int = 10) -> list[Job]:
        """The member's latest edits in this server (or in DMs), the ones /show can bring back here."""
        return await self._repo.recent(user_id, guild_id, limit=limit)

    async def outputs(self, job_id: int) -> list[JobOutput]:
        return await self._repo.outputs(job_id)

    async def kept_outputs(self, job_id: int) -> list[Path]:
        """The job's result files still on disk (retention may have pruned them)."""
        paths = [Path(o.path) for o in await self._repo.outputs(job_id) if o.path is not None]
        return await asyncio.to_thread(lambda: [path for path in paths if path.exists()])

    async def chain(self, job_id: int, actor: Actor, *, limit: int = 10) -> list[Job | None]:
        """The edits this one continued from, nearest first, so a chain can be retraced; an edit
        `actor` may not see (another member's private one, a deleted one) is None, a gap."""
        found: list[Job | None] = []
        job = await self._repo.get(job_id)
        while job is not None and job.parent_id is not None and len(found) < limit:
            job = await self._repo.get(job.parent_id)
            if job is not None:
                found.append(job if access.visible(job, actor) else None)
        return found

    async def load(self, guild_id: int | None = None) -> tuple[int, int]:
        """Edits waiting in line, and past it (being submitted, running at a host, or being
        delivered): in every server, or in one, which is all a server's admin may see."""
        counts = await self._repo.count_by_state(guild_id)
        in_flight = sum(
            counts.get(state, 0) for state in (JobState.SUBMITTING, JobState.RUNNING, JobState.DELIVERING)
        )
        return counts.get(JobState.QUEUED, 0), in_flight
