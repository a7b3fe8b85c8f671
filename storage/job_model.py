"""What a job is, as the repository reads it: its state, its kind, its options parsed once from
the stored row, and its outputs.

The options are defined here, below the core, because the repository builds them when it reads a
row; the core re-exports them (`bot.edits`) as the vocabulary every layer shares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from storage.db import Row


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


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


class JobKind(StrEnum):
    """How an edit came about: a new one, or one built on an earlier job (`parent_id`)."""

    EDIT = "edit"
    REFINE = "refine"
    RETRY = "retry"
    VARY = "vary"
    UPSCALE = "upscale"


DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class EditOptions:
    quality: str = "high"
    image_size: str = "auto"
    resolution: str = "1K"
    count: int = 1
    output_format: str = "png"
    private: bool = False
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    # The server's NSFW policy and the channel's age restriction, as they were when asked.
    nsfw_policy: str = "block"
    channel_nsfw: bool = False
    # The server's choice to write the recipe into result files (bot.jobs.recipe), as when asked.
    recipe: bool = True
    # Whether the result's message mentions the member (their /notify choice), as when asked.
    mention: bool = True

    def shows_nsfw(self) -> bool | None:
        """How a result the host flagged as NSFW may be shown: True openly, False behind a
        spoiler, None not at all."""
        if self.nsfw_policy == "spoiler":
            return False
        if self.nsfw_policy == "age_restricted" and self.channel_nsfw:
            return True
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EditOptions:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    id: int
    guild_id: int | None
    channel_id: int
    user_id: int
    parent_id: int | None
    parent_output: int | None
    kind: JobKind
    state: JobState
    prompt: str
    options: EditOptions
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
    # The process working on the job and until when (see `storage.claims`); None when none is.
    lease_owner: str | None = None
    lease_until: datetime | None = None

    @property
    def private(self) -> bool:
        """Shown only to the member who asked for it."""
        return self.options.private

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
            kind=JobKind(row["kind"]),
            state=JobState(row["state"]),
            prompt=row["prompt"],
            options=EditOptions.from_dict(json.loads(row["options"])),
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
            lease_owner=row["lease_owner"],
            lease_until=_dt(row["lease_until"]),
        )


@dataclass(frozen=True)
class NewJob:
    guild_id: int | None
    channel_id: int
    user_id: int
    prompt: str
    options: EditOptions
    inputs: Sequence[Mapping[str, Any]]
    mask: Mapping[str, Any] | None = None
    kind: JobKind = JobKind.EDIT
    parent_id: int | None = None
    parent_output: int | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    token_expires_at: datetime | None = None
    status_message_id: int | None = None
    credits_estimated: int = 0
    # The owner's money the reservation holds beside the credits (the hold's own, mirrored for
    # views of the job); written with the row, in the transaction that reserves it.
    usd_reserved_micros: int = 0
    # When the member's edit was acknowledged, which orders it among theirs; None: now.
    created_at: datetime | None = None
    # Held by its process until it is put in line (see `storage.claims`); None: in line at once.
    lease_owner: str | None = None
    lease_until: datetime | None = None


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
