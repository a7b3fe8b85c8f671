"""How many edits are at each host right now, counted across every process on the database.

A job is at a host from the moment its submit takes one of the host's slots (the row's
`provider` names it) until its run there ends (the row leaves `running`). While the job is
`submitting` the slot holds only under a live lease: a process that died mid-submit gives the
slot back when its lease lapses, and whoever takes the job over asks for a slot again. A
`running` job holds it whatever its lease says, because its run is still at the host until
the takeover (within a lease and a few seconds) follows it to the end.

Slots are taken under a lock per host (free on SQLite, whose writer is single; an advisory
lock on PostgreSQL), so two processes never both take the last one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from storage.db import Database, ts


class HostSlotRepository:
    def __init__(self, db: Database, *, now: Callable[[], datetime]) -> None:
        """`now` is the bot's clock, the one leases are stamped with."""
        self._db = db
        self._now = now

    async def take(self, host: str, job_id: int, limit: int) -> bool:
        """Put the job at `host` if fewer than `limit` other jobs are there; moving it from
        another host gives that host's slot back.

        A job that is no longer submitting (cancelled meanwhile) waits for nothing: it holds no
        slot whatever its row says, and the runner stops the run its submit makes, as it does
        for any cancel that comes during a submit.
        """
        async with self._db.transaction() as tx:
            await tx.lock(f"host:{host}")
            return bool(
                await tx.execute(
                    """
                    UPDATE jobs SET provider = ?
                    WHERE id = ? AND (state <> 'submitting' OR (
                        SELECT COUNT(*) FROM jobs AS busy
                        WHERE busy.state IN ('submitting', 'running') AND busy.provider = ?
                          AND busy.id <> ? AND (busy.state = 'running' OR busy.lease_until >= ?)
                    ) < ?)
                    """,
                    (host, job_id, host, job_id, ts(self._now()), limit),
                )
            )

    async def give_back(self, host: str, job_id: int) -> None:
        """The job's submit at `host` failed; it is there no more (unless a run began)."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE jobs SET provider = NULL WHERE id = ? AND provider = ? AND state = 'submitting'",
                (job_id, host),
            )
