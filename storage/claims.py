"""The jobs table as the queue every process takes work from: claims under leases.

A process claims a queued job by writing its lease name and a lease end into the row, in one
statement that also picks the job and counts what is already claimed, so two processes (or two
workers) can never take the same job or together claim past the cap. While it works it renews
its leases; a lease that lapses means its process died, and any process may take the job over.

Members take turns: each waiting member's turn is the later of when they were last served (a
claim of one of their jobs) and when their oldest waiting job arrived, and the member whose
turn is earliest goes first, their oldest job first. That is the ring the in-memory line kept
(served members go to the back, newcomers join at the back), rebuilt from the rows alone, so it
holds across processes and restarts. A job's age is its `created_at`, when its member was told
it was taken, never its id: on PostgreSQL one member's edits are written concurrently, and ids
follow the order the inserts happened to run in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum

from storage.db import Database, Row, ts
from storage.jobs import OPEN_STATES, Job

_OPEN = tuple(state.value for state in OPEN_STATES)
_OPEN_MARKS = ", ".join("?" for _ in _OPEN)

# Queued and not claimed by a live lease; `{t}` is the table's alias, the one parameter is now.
_CLAIMABLE = "{t}.state = 'queued' AND ({t}.lease_until IS NULL OR {t}.lease_until < ?)"

# Each waiting member's first waiting job and when they were last served (parameter: now).
_TURNS = f"""
    WITH turns AS (
        SELECT user_id, MIN(created_at) AS since,
               (SELECT MAX(served.claimed_at) FROM jobs AS served
                WHERE served.user_id = waiting.user_id) AS served_at
        FROM jobs AS waiting WHERE {_CLAIMABLE.format(t="waiting")}
        GROUP BY user_id
    )
"""  # noqa: S608
_TURN = "CASE WHEN turns.served_at > turns.since THEN turns.served_at ELSE turns.since END"
# The waiting jobs, the member whose turn comes first first, each member's oldest first: the
# first is the one a claim takes (parameter: now).
_LINE = f"""
    FROM jobs AS q JOIN turns ON turns.user_id = q.user_id
    WHERE {_CLAIMABLE.format(t="q")}
    ORDER BY {_TURN}, q.created_at, q.id
"""
# Every waiting job with what its place derives from: its member, its age and when its member was
# last served (parameter: now). The places are worked out from these rows in Python (`_in_order`):
# numbering them in SQL took window functions, temporary indexes and sorts, 0.5 ms with five jobs
# waiting and 3.6 ms with 200, read once or twice an edit on the event loop.
_WAITING = f"""
    SELECT q.id, q.user_id, q.created_at,
           (SELECT MAX(served.claimed_at) FROM jobs AS served
            WHERE served.user_id = q.user_id) AS served_at
    FROM jobs AS q WHERE {_CLAIMABLE.format(t="q")}
"""  # noqa: S608


class Owed(StrEnum):
    """What a finished job may still be owed when the process ending it stopped part-way."""

    SETTLEMENT = "settlement"
    """Its credit hold was never captured or released."""
    NOTICE = "notice"
    """It failed and its member was never told."""


# Each as a condition on the job's row, checked again by the claim itself: a process that
# claimed the job, did what was owed and let go while this one was reading leaves nothing to do.
_STILL_OWED = {
    Owed.SETTLEMENT: """NOT EXISTS (
        SELECT 1 FROM ledger AS done WHERE done.job_id = jobs.id AND done.kind IN ('capture', 'release'))""",
    Owed.NOTICE: "notified_at IS NULL",
}


class ClaimRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim_next(
        self, owner: str, *, clock: Callable[[], datetime], lease: timedelta, max_in_flight: int
    ) -> Job | None:
        """Claim the job whose turn it is for `lease`, unless `max_in_flight` jobs are already
        claimed across every process; None when there is nothing to claim or no room.

        The time is read once the claim holds the lock, so claims are stamped in the order they
        happen (the turns depend on it).
        """
        # Most looks find the line empty (a chain of claims ends with one, an idle worker's look
        # is one): a read tells so without the write lock, the claim lock and a commit.
        waiting = await self._db.fetch_one(
            f"SELECT 1 FROM jobs AS q WHERE {_CLAIMABLE.format(t='q')} LIMIT 1",  # noqa: S608
            (ts(clock()),),
        )
        if waiting is None:
            return None
        pick = f"{_TURNS} SELECT q.id {_LINE} LIMIT 1"
        if self._db.dialect == "postgresql":
            # Rows another transaction holds (a cancel, another claimer) are skipped, not waited on.
            pick += " FOR UPDATE OF q SKIP LOCKED"
        async with self._db.transaction() as tx:
            # The in-flight count must not be read by two claimers at once (SQLite's single
            # writer already ensures it; on PostgreSQL the claims take turns on this key).
            await tx.lock("job-claims")
            now = clock()
            row = await tx.fetch_one(
                f"""
                UPDATE jobs SET lease_owner = ?, lease_until = ?, claimed_at = ?
                WHERE id = ({pick})
                  AND (SELECT COUNT(*) FROM jobs AS held
                       WHERE held.lease_until >= ? AND held.state IN ({_OPEN_MARKS})) < ?
                RETURNING *
                """,  # noqa: S608
                (owner, ts(now + lease), ts(now), ts(now), ts(now), ts(now), *_OPEN, max_in_flight),
            )
        return None if row is None else Job.from_row(row)

    async def in_line(self, now: datetime, *, first: int | None = None) -> list[int]:
        """The waiting jobs' ids in the order claims will take them; only the `first` few if given."""
        order = _in_order(await self._db.fetch_all(_WAITING, (ts(now),)))
        return order if first is None else order[: max(0, first)]

    async def renew(self, owner: str, until: datetime) -> int:
        """Push back the end of every lease `owner` holds; how many. Finished jobs too: one held
        is still being ended (its credits settled, its member told of a failure), and a lease
        that lapsed meanwhile would let another process's sweep do that again."""
        async with self._db.transaction() as tx:
            return await tx.execute(
                "UPDATE jobs SET lease_until = ? WHERE lease_owner = ?", (ts(until), owner)
            )

    async def release(self, job_id: int, owner: str) -> None:
        """`owner` is done with the job (it ended, or was left for another process to finish)."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
                (job_id, owner),
            )

    async def release_all(self, owner: str) -> int:
        """A process stopping on purpose hands its unfinished jobs on at once."""
        async with self._db.transaction() as tx:
            return await tx.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (owner,)
            )

    async def leased_or_in_flight(self) -> list[Job]:
        """Unfinished jobs that a process holds or held: every claimed one, and every one past
        `queued` (a job in flight with no lease was left by a process that stopped)."""
        rows = await self._db.fetch_all(
            f"""
            SELECT * FROM jobs WHERE state IN ({_OPEN_MARKS})
              AND (lease_owner IS NOT NULL OR state <> 'queued')
            ORDER BY id
            """,  # noqa: S608
            _OPEN,
        )
        return [Job.from_row(row) for row in rows]

    async def take_over(
        self, job: Job, owner: str, until: datetime, *, owed: Owed | None = None
    ) -> Job | None:
        """Claim a job from the lease it had when read (compare-and-set): None when its holder
        renewed it, another process took it first, or it moved on meanwhile; a finished job
        only while it is still `owed` that."""
        lease_until = None if job.lease_until is None else ts(job.lease_until)
        still = "" if owed is None else f"AND {_STILL_OWED[owed]}"
        async with self._db.transaction() as tx:
            row = await tx.fetch_one(
                f"""
                UPDATE jobs SET lease_owner = ?, lease_until = ?
                WHERE id = ? AND state = ? AND lease_owner IS NOT DISTINCT FROM ?
                  AND lease_until IS NOT DISTINCT FROM ? {still}
                RETURNING *
                """,  # noqa: S608
                (owner, ts(until), job.id, job.state.value, job.lease_owner, lease_until),
            )
        return None if row is None else Job.from_row(row)


def _in_order(waiting: list[Row]) -> list[int]:
    """The waiting jobs' ids in line: each member's first job in turn, then each member's second,
    and so on; members in order of their turn (the later of when they were last served and when
    their first waiting job arrived), then of that first job. Its first is the job a claim takes
    (`_LINE` orders the same rows by the same turn, oldest first)."""
    members: dict[object, list[tuple[str, int]]] = {}
    served_at: dict[object, str | None] = {}
    for row in waiting:
        members.setdefault(row[1], []).append((row[2], int(row[0])))
        served_at[row[1]] = row[3]
    places: list[tuple[int, str, str, int, int]] = []
    for member, jobs in members.items():
        jobs.sort()
        since, first_id = jobs[0]
        served = served_at[member]
        turn = served if served is not None and served > since else since
        places += [(depth, turn, since, first_id, job_id) for depth, (_, job_id) in enumerate(jobs)]
    places.sort()
    return [place[-1] for place in places]
