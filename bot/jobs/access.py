"""Who may see or act on an edit: one rule for every command and button, decided on our side.

A custom_id or a job number comes from the member's client and carries no authority, so each
action is checked against the job row itself: the server it was made in, its requester, its
privacy, and whether it was deleted. "Not yours" and "does not exist" are one answer, so
sequential job numbers cannot be walked to learn what other servers or members did.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from storage.jobs import Job


class Act(StrEnum):
    SHOW = "show"
    INFO = "info"
    REFINE = "refine"
    USE = "use"
    RETRY = "retry"
    VARY = "vary"
    UPSCALE = "upscale"
    PAINT = "paint"
    DELETE = "delete"
    CANCEL = "cancel"


# Acts that change or end the requester's edit, rather than start a new one from it.
MANAGING = frozenset({Act.DELETE, Act.CANCEL})


@dataclass(frozen=True)
class Actor:
    """Who is asking, and where: the server of the interaction (None in DMs) and whether they hold
    Manage Server there."""

    user_id: int
    guild_id: int | None
    moderates: bool = False


class AccessError(Exception):
    """A refusal with the one sentence the member sees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobHidden(AccessError):
    """The job does not exist for this member here: missing, deleted, another server's, or private."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"There is no edit #{job_id} you can use here; /history lists yours.")
        self.job_id = job_id


class ActRefused(AccessError):
    """The member can see the job but this act is the requester's or a moderator's."""

    def __init__(self, act: Act) -> None:
        super().__init__(f"Only the member who asked for this edit, or a moderator, can {act.value} it.")
        self.act = act


def check(job: Job | None, actor: Actor, act: Act, job_id: int) -> Job:
    """The job when `actor` may do `act` on it; raises JobHidden or ActRefused otherwise.

    - A job lives in the server it was made in; a DM job (no server) only for its requester.
    - A private job exists only for its requester.
    - Anyone in the server may start a new edit from a public result (Refine, Retry, Vary, Use,
      Upscale, Paint; they pay with their own credits) and read its Info.
    - Showing a job again is for its requester, or a moderator of its server for a public job.
    - Delete and Cancel are for the requester or a moderator of the job's server.
    """
    if job is None or job.deleted_at is not None or job.guild_id != actor.guild_id:
        raise JobHidden(job_id)
    own = job.user_id == actor.user_id
    if (job.private or job.guild_id is None) and not own:
        raise JobHidden(job_id)
    if act is Act.SHOW and not (own or actor.moderates):
        raise JobHidden(job_id)
    if act in MANAGING and not (own or actor.moderates):
        raise ActRefused(act)
    return job


def visible(job: Job, actor: Actor) -> bool:
    """Whether `actor` may read the job at all (its Info, its place in a chain)."""
    try:
        check(job, actor, Act.INFO, job.id)
    except AccessError:
        return False
    return True
