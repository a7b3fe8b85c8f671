"""Jobs and their outputs: the rows that make an edit durable.

State changes are compare-and-set (`move`): a change applies only from the states the caller
expects, so a callback and a poll racing for the same run, or recovery running twice, change
a job once and the loser learns it lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from storage.db import Database, Row, Tx, ts


class JobState(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    RUNNING = "running"
    DELIVERING = "delivering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.REFUNDED})
OPEN_STATES = frozenset(JobState) - FINAL_STATES


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class Job:
    id: int
    guild_id: int | None
    channel_id: int
    user_id: int
    parent_id: int | None
    parent_output: int | None
    kind: str
    state: JobState
    prompt: str
    options: Mapping[str, Any]
    inputs: Sequence[Mapping[str, Any]]
    mask: Mapping[str, Any] | None
    provider: str | None
    run_id: str | None
    run_data: Mapping[str, Any]
    application_id: int | None
    interaction_token: str | None
    token_expires_at: datetime | None
    status_message_id: int | None
    result_message_id: int | None
    credits_estimated: int
    credits_charged: int
    usd_micros: int
    error_kind: str | None
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    completed_at: datetime | None
    notified_at: datetime | None
    deleted_at: datetime | None = None

    @property
    def private(self) -> bool:
        """Shown only to the member who asked for it."""
        return bool(self.options.get("private", False))

    @property
    def message_ids(self) -> frozenset[int]:
        """The job's own messages: its progress message and its result (often the same one)."""
        return frozenset(m for m in (self.status_message_id, self.result_message_id) if m is not None)

    @classmethod
    def from_row(cls, row: Row) -> Job:
        return cls(
            id=row["id"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            user_id=row["user_id"],
            parent_id=row["parent_id"],
            parent_output=row["parent_output"],
            kind=row["kind"],
            state=JobState(row["state"]),
            prompt=row["prompt"],
            options=json.loads(row["options"]),
            inputs=json.loads(row["inputs"]),
            mask=json.loads(row["mask"]) if row["mask"] else None,
            provider=row["provider"],
            run_id=row["run_id"],
            run_data=json.loads(row["run_data"]),
            application_id=row["application_id"],
            interaction_token=row["interaction_token"],
            token_expires_at=_dt(row["token_expires_at"]),
            status_message_id=row["status_message_id"],
            result_message_id=row["result_message_id"],
            credits_estimated=row["credits_estimated"],
            credits_charged=row["credits_charged"],
            usd_micros=row["usd_micros"],
            error_kind=row["error_kind"],
            error=row["error"],
            attempts=row["attempts"],
            created_at=datetime.fromisoformat(row["created_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            submitted_at=_dt(row["submitted_at"]),
            completed_at=_dt(row["completed_at"]),
            notified_at=_dt(row["notified_at"]),
            deleted_at=_dt(row["deleted_at"]),
        )


@dataclass(frozen=True)
class NewJob:
    guild_id: int | None
    channel_id: int
    user_id: int
    prompt: str
    options: Mapping[str, Any]
    inputs: Sequence[Mapping[str, Any]]
    mask: Mapping[str, Any] | None = None
    kind: str = "edit"
    parent_id: int | None = None
    parent_output: int | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    token_expires_at: datetime | None = None
    status_message_id: int | None = None
    credits_estimated: int = 0


@dataclass(frozen=True)
class NewOutput:
    idx: int
    source_url: str | None
    path: str
    content_type: str
    width: int
    height: int
    size: int
    nsfw: bool
    mask_kept: bool = False
    changed_outside: float | None = None


@dataclass(frozen=True)
class JobOutput:
    job_id: int
    idx: int
    source_url: str | None
    path: str | None
    content_type: str | None
    width: int | None
    height: int | None
    size: int | None
    nsfw: bool
    discord_url: str | None
    mask_kept: bool = False
    changed_outside: float | None = None

    @classmethod
    def from_row(cls, row: Row) -> JobOutput:
        return cls(
            job_id=row["job_id"],
            idx=row["idx"],
            source_url=row["source_url"],
            path=row["path"],
            content_type=row["content_type"],
            width=row["width"],
            height=row["height"],
            size=row["size"],
            nsfw=bool(row["nsfw"]),
            discord_url=row["discord_url"],
            mask_kept=bool(row["mask_kept"]),
            changed_outside=row["changed_outside"],
        )


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
    }
)


class JobRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, job: NewJob) -> Job:
        now = _ts(utcnow())
        async with self._db.transaction() as tx:
            inserted = await tx.fetch_one(
                """
                INSERT INTO jobs (guild_id, channel_id, user_id, parent_id, parent_output, kind, state,
                                  prompt, options, inputs, mask, application_id, interaction_token,
                                  token_expires_at, status_message_id, credits_estimated, created_at,
                                  updated_at)
                VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                RETURNING id
                """,
                (
                    job.guild_id,
                    job.channel_id,
                    job.user_id,
                    job.parent_id,
                    job.parent_output,
                    job.kind,
                    job.prompt,
                    json.dumps(dict(job.options)),
                    json.dumps([dict(item) for item in job.inputs]),
                    json.dumps(dict(job.mask)) if job.mask is not None else None,
                    job.application_id,
                    job.interaction_token,
                    _ts(job.token_expires_at),
                    job.status_message_id,
                    job.credits_estimated,
                    now,
                    now,
                ),
            )
        assert inserted is not None
        found = await self.get(int(inserted["id"]))
        assert found is not None
        return found

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
        values: list[Any] = [to.value, _ts(utcnow())]
        for name, value in fields.items():
            assignments.append(f"{name} = ?")
            if isinstance(value, datetime):
                value = _ts(value)
            elif isinstance(value, Mapping):
                value = json.dumps(dict(value))
            values.append(value)
        marks = ", ".join("?" for _ in expected_states)
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                f"UPDATE jobs SET {', '.join(assignments)} WHERE id = ? AND state IN ({marks})",  # noqa: S608
                (*values, job_id, *expected_states),
            )
        return await self.get(job_id) if changed else None

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
        """The member's edits made in one server (None: in DMs), newest first, deleted ones left out."""
        rows = await self._db.fetch_all(
            """
            SELECT * FROM jobs WHERE user_id = ? AND guild_id IS NOT DISTINCT FROM ? AND deleted_at IS NULL
            ORDER BY id DESC LIMIT ? OFFSET ?
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
                (message_id, _ts(utcnow()), job_id),
            )

    async def mark_notified(self, job_id: int) -> None:
        async with self._db.transaction() as tx:
            await tx.execute("UPDATE jobs SET notified_at = ? WHERE id = ?", (_ts(utcnow()), job_id))

    async def failed_unnotified(self) -> list[Job]:
        """Failed edits whose member was never told (a crash came between refund and notice)."""
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE state = 'failed' AND notified_at IS NULL ORDER BY id"
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

    async def final_with_open_hold(self) -> list[Job]:
        """Finished jobs whose credit reservation was never captured or released."""
        final = tuple(state.value for state in FINAL_STATES)
        marks = ", ".join("?" for _ in final)
        rows = await self._db.fetch_all(
            f"""
            SELECT jobs.* FROM jobs JOIN ledger AS held ON held.job_id = jobs.id AND held.kind = 'reserve'
            WHERE jobs.state IN ({marks}) AND NOT EXISTS (
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
        now = _ts(utcnow())
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

    async def set_inputs(
        self, job_id: int, inputs: Sequence[Mapping[str, Any]], mask: Mapping[str, Any] | None
    ) -> None:
        """Where the job's inputs and mask are kept now, for a Retry long after Discord's links expired."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE jobs SET inputs = ?, mask = ? WHERE id = ?",
                (
                    json.dumps([dict(item) for item in inputs]),
                    json.dumps(dict(mask)) if mask is not None else None,
                    job_id,
                ),
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
                (message_id, job_id, channel_id, _ts(utcnow())),
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
                (_ts(utcnow()), _ts(utcnow()), job_id),
            )
        return bool(changed)
