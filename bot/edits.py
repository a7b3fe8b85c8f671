"""What an edit is made of, as the bot's layers pass it around: options, inputs, the order a
member placed, progress and results, and the ways it can be refused.

Kept apart from the job service so the cogs, the service and the delivery can share these
types without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot.credits.values import credit_scope
from bot.providers.base import ErrorKind, ProviderError
from storage.job_model import DEFAULT_UPLOAD_LIMIT, EditOptions, Job, JobKind, JobState

__all__ = ["DEFAULT_UPLOAD_LIMIT", "EditOptions", "JobKind"]  # defined with the job the repository reads

# Discord invalidates an interaction token after 15 minutes; after that we post in the channel.
TOKEN_LIFETIME = timedelta(minutes=15)


@dataclass(frozen=True)
class InputImage:
    """A reference image as Discord described it; `url` is signed and expires in about a day."""

    url: str
    filename: str
    content_type: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    path: str | None = None
    """Where the bytes are kept once fetched, so a Retry after the URL expired still works."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EditOrder:
    """Everything the member asked for, as the cog parsed it."""

    guild_id: int | None
    channel_id: int
    user_id: int
    prompt: str
    images: Sequence[InputImage]
    options: EditOptions = field(default_factory=EditOptions)
    mask: InputImage | None = None
    kind: JobKind = JobKind.EDIT
    parent_id: int | None = None
    parent_output: int | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    status_message_id: int | None = None
    role_ids: Sequence[int] = ()
    # Asked through the member's own install where no server installed Retouch (`guild_id` None).
    personal: bool = False
    token_expires_at: datetime | None = None
    """When the interaction token dies, if it was issued before now (the painter's, at the Paint press)."""
    acked_at: datetime | None = None
    """When the member was told the edit was taken (`Intake.note`): the job's place among the
    member's edits, which the order its row happens to be written in must not change."""
    confirmed: bool = False
    """The member has agreed to its cost (the confirmation, or the painter's Submit): it is not
    asked again, also when a restart recovers it from the journal."""

    @property
    def credit_guild(self) -> int:
        """Credits are kept per server; DMs with the bot and personal use have books of their own."""
        return credit_scope(self.guild_id, personal=self.personal)


@dataclass(frozen=True)
class ResultFile:
    path: Path
    filename: str
    content_type: str
    width: int
    height: int
    size: int
    shrunk: bool
    spoiler: bool = False


@dataclass(frozen=True)
class Progress:
    state: JobState
    queue_position: int | None = None
    elapsed: float | None = None


@dataclass(frozen=True)
class Receipt:
    message_id: int
    urls: Sequence[str]


class Delivery(Protocol):
    """How the job runner talks to members; the Discord layer implements it."""

    async def show_progress(self, job: Job, progress: Progress) -> None: ...

    async def deliver(self, job: Job, files: Sequence[ResultFile]) -> Receipt: ...

    async def report_failure(self, job: Job, message: str) -> None: ...

    async def refuse(self, order: EditOrder, message: str) -> None:
        """An acknowledged edit refused before it had a job (recovered from the journal after a
        restart, under rules that changed meanwhile): the member is told, privately."""

    def cancelled(self, job: Job) -> None:
        """The job was cancelled (the caller shows that): no more of its progress is shown."""


class DeliveryFailed(Exception):
    """Discord refused the result everywhere it could go (interaction, channel, DMs), or
    failed in a way worth trying again later (`transient`: its 5xx answers)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


PAUSED = "Retouch is not taking new edits right now (it may be restarting); try again in a minute."


class EditsPaused(Exception):
    """New edits are not being taken (shutting down, or paused by an admin)."""

    message = PAUSED


class CannotRecord(EditsPaused):
    """The edit could not be recorded in time to answer Discord (the journal's disk or
    database is not answering): a refusal now is the only answer that can still arrive."""

    message = "Retouch can't record new edits right now (its storage isn't answering); try again in a minute."


class NotTaken(Exception):
    """The server's rules refuse an edit (a pause, the channel, a cost nobody confirmed);
    `message` is one sentence fit to show the member."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooManyJobs(Exception):
    """The member (or the server) already has as many edits in flight as allowed."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(scope, limit)
        self.scope = scope
        self.limit = limit

    @property
    def message(self) -> str:
        if self.scope == "member":
            return f"You already have {self.limit} edits in progress; wait for one to finish, or cancel one."
        return f"This server already has {self.limit} edits in progress; try again in a minute."


MEMBER_MESSAGES = {
    ErrorKind.INVALID_REQUEST: "The image host could not use this request: {detail}. Try another image.",
    ErrorKind.CONTENT_REJECTED: "The image host's safety filter refused this edit. Try another prompt.",
    ErrorKind.AUTH_FAILED: "The bot's image host rejected its key or account; please tell the server owner.",
    ErrorKind.RATE_LIMITED: "The image host is busy right now. Try again in a minute.",
    ErrorKind.UNAVAILABLE: "The image host is not responding right now. Try again in a few minutes.",
    ErrorKind.RUN_FAILED: "The image host could not finish this edit ({detail}). Try again.",
}


NSFW_BLOCKED = (
    "The image host flagged the result as NSFW, which this server does not allow here; nothing was charged."
)
STORAGE_FULL = "This bot's storage is full; try again later, and tell the server owner."
# The reference is also in the log line that holds the details, so the owner can find it.
BOT_ERROR = (
    "The bot hit an unexpected error and stopped this edit, free of charge; if it happens again, "
    "tell the server owner (reference {reference})."
)
INTERRUPTED = (
    "This edit was interrupted {starts} times by the bot restarting, so it was stopped free of charge; "
    "if it happens again, tell the server owner (reference {reference})."
)


def member_message(error: ProviderError) -> str:
    return MEMBER_MESSAGES[error.kind].format(detail=error.message.rstrip("."))
