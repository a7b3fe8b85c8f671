"""Jobs and their outputs: the rows that make an edit durable.

State changes are compare-and-set (`move`): a change applies only from the states the caller
expects, so a callback and a poll racing for the same run, or recovery running twice, change
a job once and the loser learns it lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from storage.db import Database, Tx, ts
from storage.job_model import (
    DEFAULT_UPLOAD_LIMIT,
    FINAL_STATES,
    OPEN_STATES,
    EditOptions,
    Job,
    JobKind,
    JobOutput,
    JobState,
    NewJob,
    NewOutput,
)

__all__ = [
    "DEFAULT_UPLOAD_LIMIT",
    "FINAL_STATES",
    "OPEN_STATES",
    "EditOptions",
    "Job",
    "JobKind",
    "JobOutput",
    "JobRepository",
    "JobState",
    "NewJob",
    "NewOutput",
]


def _wall_time() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


# Only the jobs under a lease (the open ones and the ones a process is ending), read through
# their index: with a plain `lease_owner IS NOT NULL`, SQLite reads every finished job of the
# state asked for through the index on state.
_LEASED = "AND jobs.id IN (SELECT leased.id FROM jobs AS leased WHERE leased.lease_owner IS NOT NULL)"

# Columns `move` may set alongside a state change; anything else is a programming error.
_MOVABLE = frozenset(
    {
        "provider",
        "run_id",
        "run_data",
        "status_message_id",
        "result_message_id",
        "credits_charged",
        "usd_micros",
        "error_kind",
        "error",
        "attempts",
        "submitted_at",
        "completed_at",
        "lease_owner",
        "lease_until",
        "inputs",
        "mask",
    }
)


class JobRepository:
    def __init__(self, db: Database, *, now: Callable[[], datetime] = _wall_time) -> None:
        """`now` is the bot's clock (`bot.runtime.clock`), handed in by whoever builds the
        repository; every time the repository stamps on a row comes from it."""
        self._db = db
        self._now = now

    @property
    def database(self) -> Database:
        """The store the jobs live in, for the repositories that share their rows (claims)."""
        return self._db

    async def insert(self, job: NewJob) -> Job:
        now = _ts(self._now())
        async with self._db.transaction() as tx:
            inserted = await tx.fetch_one(
                """
                INSERT INTO jobs (guild_id, channel_id, user_id, parent_id, parent_output, kind, state,
                                  prompt, options, inputs, mask, application_id, interaction_token,
                                  token_expires_at, status_message_id, credits_estimated, usd_reserved_micros,
                                  created_at, updated_at, lease_owner, lease_until)
                VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                RETURNING *
                """,
                (
                    job.guild_id,
                    job.channel_id,
                    job.user_id,
                    job.parent_id,
                    job.parent_output,
                    job.kind,
                    job.prompt,
                    json.dumps(job.options.to_dict()),
                    json.dumps([dict(item) for item in job.inputs]),
                    json.dumps(dict(job.mask)) if job.mask is not None else None,
                    job.application_id,
                    job.interaction_token,
                    _ts(job.token_expires_at),
                    job.status_message_id,
                    job.credits_estimated,
                    job.usd_reserved_micros,
                    _ts(job.created_at) or now,
                    now,
                    job.lease_owner,
                    _ts(job.lease_until),
                ),
            )
        assert inserted is not None
        return Job.from_row(inserted)

    async def find_by_token(self, interaction_token: str) -> Job | None:
        row = await self._db.fetch_one("SELECT * FROM jobs WHERE interaction_token = ?", (interaction_token,))
        return None if row is None else Job.from_row(row)

    async def find_by_run(self, provider: str, run_id: str) -> Job | None:
        row = await self._db.fetch_one(
            "SELECT * FROM jobs WHERE provider = ? AND run_id = ?", (provider, run_id)
        )
        return None if row is None else Job.from_row(row)

    async def get(self, job_id: int) -> Job | None:
        row = await self._db.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else Job.from_row(row)

    async def move(
        self,
        job_id: int,
        expected: Iterable[JobState],
        to: JobState,
        **fields: Any,
    ) -> Job | None:
        """Change state only from one of `expected`; None when the job was elsewhere."""
        unknown = set(fields) - _MOVABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} through move()")
        expected_states = [state.value for state in expected]
        assignments = ["state = ?", "updated_at = ?"]
        values: list[Any] = [to.value, _ts(self._now())]
        for name, value in fields.items():
            assignments.append(f"{name} = ?")
            if isinstance(value, datetime):
                value = _ts(value)
            elif isinstance(value, Mapping):
                value = json.dumps(dict(value))
            elif isinstance(value, Sequence) and not isinstance(value, str):  # the kept inputs
                value = json.dumps([dict(item) for item in value])
            values.append(value)
        marks = ", ".join("?" for _ in expected_states)
        async with self._db.transaction() as tx:
            # The row as this update left it, in the same statement: not read again after the
            # commit (a second statement on every move, 4 a job).
            row = await tx.fetch_one(
                f"UPDATE jobs SET {', '.join(assignments)} WHERE id = ? AND state IN ({marks}) RETURNING *",  # noqa: S608
                (*values, job_id, *expected_states),
            )
        return None if row is None else Job.from_row(row)

    async def count_open(self, user_id: int, guild_id: int | None) -> tuple[int, int]:
        """Edits not yet finished: the member's own, and the whole server's."""
        marks = ", ".join("?" for _ in OPEN_STATES)
        states = tuple(state.value for state in OPEN_STATES)
        row = await self._db.fetch_one(
            f"""
            SELECT COALESCE(SUM(CASE WHEN user_id = ? THEN 1 ELSE 0 END), 0),
                   COALESCE(SUM(CASE WHEN guild_id IS NOT DISTINCT FROM ? THEN 1 ELSE 0 END), 0)
            FROM jobs WHERE state IN ({marks})
            """,  # noqa: S608
            (user_id, guild_id, *states),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    async def recent(
        self, user_id: int, guild_id: int | None, *, limit: int = 10, offset: int = 0
    ) -> list[Job]:
        """The member's edits made in one server (None: in DMs), newest first (by when each was
        acknowledged, which the order their rows were written in need not follow), deleted ones
        left out."""
        rows = await self._db.fetch_all(
            """
            SELECT * FROM jobs WHERE user_id = ? AND guild_id IS NOT DISTINCT FROM ? AND deleted_at IS NULL
            ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?
            """,
            (user_id, guild_id, limit, offset),
        )
        return [Job.from_row(row) for row in rows]

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A unit the job row shares with other repositories' writes (its credit reservation)."""
        return self._db.transaction()

    async def set_status_message(self, job_id: int, message_id: int) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE jobs SET status_message_id = ?, updated_at = ? WHERE id = ?",
                (message_id, _ts(self._now()), job_id),
            )

    async def mark_notified(self, job_id: int) -> None:
        async with self._db.transaction() as tx:
            await tx.execute("UPDATE jobs SET notified_at = ? WHERE id = ?", (_ts(self._now()), job_id))

    async def failed_unnotified(self, *, leased_only: bool = False) -> list[Job]:
        """Failed edits whose member was never told (a crash came between refund and notice).

        `leased_only`: only those still under a lease, as in `final_with_open_hold`.
        """
        leased = _LEASED if leased_only else ""
        rows = await self._db.fetch_all(
            f"SELECT * FROM jobs WHERE state = 'failed' AND notified_at IS NULL {leased} ORDER BY id"  # noqa: S608
        )
        return [Job.from_row(row) for row in rows]

    async def count_by_state(self, guild_id: int | None = None) -> dict[JobState, int]:
        """Jobs by state, in every server or in one (a server admin sees only their own)."""
        rows = await self._db.fetch_all(
            "SELECT state, COUNT(*) FROM jobs WHERE CAST(? AS BIGINT) IS NULL OR guild_id = ? GROUP BY state",
            (guild_id, guild_id),
        )
        return {JobState(row[0]): int(row[1]) for row in rows}

    async def count_open_holds(self) -> int:
        row = await self._db.fetch_one("""
            SELECT COUNT(*) FROM ledger AS held WHERE held.kind = 'reserve' AND NOT EXISTS (
                SELECT 1 FROM ledger AS done
                WHERE done.job_id = held.job_id AND done.kind IN ('capture', 'release')
            )
            """)
        return int(row[0]) if row else 0

    async def final_with_open_hold(self, *, leased_only: bool = False) -> list[Job]:
        """Finished jobs whose credit reservation was never captured or released.

        `leased_only`: only those still under a lease, as a job is while its process ends it
        (the ones a process that died left); the others take reading every reservation ever
        made, which is for a start, not for every few seconds.
        """
        final = tuple(state.value for state in FINAL_STATES)
        marks = ", ".join("?" for _ in final)
        leased = _LEASED if leased_only else ""
        rows = await self._db.fetch_all(
            f"""
            SELECT jobs.* FROM jobs JOIN ledger AS held ON held.job_id = jobs.id AND held.kind = 'reserve'
            WHERE jobs.state IN ({marks}) {leased} AND NOT EXISTS (
                SELECT 1 FROM ledger AS done
                WHERE done.job_id = jobs.id AND done.kind IN ('capture', 'release')
            )
            ORDER BY jobs.id
            """,  # noqa: S608
            final,
        )
        return [Job.from_row(row) for row in rows]

    async def in_use(self) -> set[int]:
        """Jobs whose kept files must stay: the unfinished ones (few: the limits bound them),
        and the jobs they build on."""
        return {
            job for open_job in await self.open_jobs() for job in (open_job.id, open_job.parent_id) if job
        }

    async def open_jobs(self) -> list[Job]:
        marks = ", ".join("?" for _ in OPEN_STATES)
        rows = await self._db.fetch_all(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id",  # noqa: S608
            tuple(state.value for state in OPEN_STATES),
        )
        return [Job.from_row(row) for row in rows]

    async def add_outputs(self, job_id: int, outputs: Sequence[NewOutput]) -> None:
        """Record a job's fetched outputs together; fetching again after a crash replaces them."""
        now = _ts(self._now())
        async with self._db.transaction() as tx:
            await tx.executemany(
                """
                INSERT INTO job_outputs
                    (job_id, idx, source_url, path, content_type, width, height, size, nsfw, mask_kept,
                     changed_outside, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (job_id, idx) DO UPDATE SET
                    source_url = excluded.source_url, path = excluded.path,
                    content_type = excluded.content_type, width = excluded.width,
                    height = excluded.height, size = excluded.size, nsfw = excluded.nsfw,
                    mask_kept = excluded.mask_kept, changed_outside = excluded.changed_outside,
                    discord_url = NULL, created_at = excluded.created_at
                """,
                [
                    (
                        job_id,
                        o.idx,
                        o.source_url,
                        o.path,
                        o.content_type,
                        o.width,
                        o.height,
                        o.size,
                        int(o.nsfw),
                        int(o.mask_kept),
                        o.changed_outside,
                        now,
                    )
                    for o in outputs
                ],
            )

    async def set_output_urls(self, job_id: int, urls: Sequence[str]) -> None:
        async with self._db.transaction() as tx:
            await tx.executemany(
                "UPDATE job_outputs SET discord_url = ? WHERE job_id = ? AND idx = ?",
                [(url, job_id, idx) for idx, url in enumerate(urls)],
            )

    async def outputs(self, job_id: int) -> list[JobOutput]:
        rows = await self._db.fetch_all("SELECT * FROM job_outputs WHERE job_id = ? ORDER BY idx", (job_id,))
        return [JobOutput.from_row(row) for row in rows]

    async def add_message(self, job_id: int, channel_id: int | None, message_id: int) -> None:
        """Another message now carries the job's buttons (a copy /show posted)."""
        async with self._db.transaction() as tx:
            await tx.execute(
                """
                INSERT INTO job_messages (message_id, job_id, channel_id, created_at)
                VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING
                """,
                (message_id, job_id, channel_id, _ts(self._now())),
            )

    async def carries(self, job_id: int, message_id: int) -> bool:
        """Whether this message is one of the job's own or a copy recorded with `add_message`."""
        return (
            await self._db.fetch_one(
                """
            SELECT 1 FROM jobs WHERE id = ? AND ? IN (status_message_id, result_message_id)
            UNION ALL SELECT 1 FROM job_messages WHERE job_id = ? AND message_id = ?
            """,
                (job_id, message_id, job_id, message_id),
            )
            is not None
        )

    async def copies(self, job_id: int) -> list[tuple[int | None, int]]:
        """The (channel, message) of every copy of the job that /show posted."""
        rows = await self._db.fetch_all(
            "SELECT channel_id, message_id FROM job_messages WHERE job_id = ? ORDER BY message_id", (job_id,)
        )
        return [(row[0], row[1]) for row in rows]

    async def mark_deleted(self, job_id: int) -> bool:
        """Delete the result for good; False when it already was."""
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE jobs SET deleted_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
                (_ts(self._now()), _ts(self._now()), job_id),
            )
        return bool(changed)
