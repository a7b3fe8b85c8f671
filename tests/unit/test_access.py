"""The access rule for every act on a job, as a table: server, requester, privacy, deletion."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bot.edits import EditOptions, JobKind
from bot.jobs.access import Act, Actor, ActRefused, JobHidden, check, visible
from storage.jobs import Job, JobState

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SERVER, OTHER_SERVER = 10, 20
OWNER, STRANGER = 1, 2

JOB = Job(
    id=7,
    guild_id=SERVER,
    channel_id=100,
    user_id=OWNER,
    parent_id=None,
    parent_output=None,
    kind=JobKind.EDIT,
    state=JobState.DONE,
    prompt="p",
    options=EditOptions(),
    inputs=[],
    mask=None,
    provider=None,
    run_id=None,
    run_data={},
    application_id=None,
    interaction_token=None,
    token_expires_at=None,
    status_message_id=None,
    result_message_id=None,
    credits_estimated=0,
    credits_charged=0,
    usd_micros=0,
    error_kind=None,
    error=None,
    attempts=0,
    created_at=NOW,
    updated_at=NOW,
    submitted_at=None,
    completed_at=None,
    notified_at=None,
)
PRIVATE = replace(JOB, options=EditOptions(private=True))
DM_JOB = replace(JOB, guild_id=None)

requester = Actor(OWNER, SERVER)
member = Actor(STRANGER, SERVER)
moderator = Actor(STRANGER, SERVER, moderates=True)
moderator_elsewhere = Actor(STRANGER, OTHER_SERVER, moderates=True)
requester_elsewhere = Actor(OWNER, OTHER_SERVER)
requester_in_dm = Actor(OWNER, None)
stranger_in_dm = Actor(STRANGER, None)

ALLOWED, HIDDEN, REFUSED = "allowed", "hidden", "refused"
NEW_EDITS = (Act.REFINE, Act.USE, Act.RETRY, Act.VARY, Act.UPSCALE, Act.INFO)


def outcome(job: Job | None, actor: Actor, act: Act) -> str:
    try:
        check(job, actor, act, 7)
    except JobHidden:
        return HIDDEN
    except ActRefused:
        return REFUSED
    return ALLOWED


@pytest.mark.parametrize("act", list(Act))
def test_the_requester_may_do_anything_with_their_job_in_its_server(act: Act) -> None:
    assert outcome(JOB, requester, act) == ALLOWED
    assert outcome(PRIVATE, requester, act) == ALLOWED


@pytest.mark.parametrize("act", list(Act))
@pytest.mark.parametrize("actor", [requester_elsewhere, moderator_elsewhere, requester_in_dm])
def test_a_job_does_not_exist_outside_its_server(act: Act, actor: Actor) -> None:
    assert outcome(JOB, actor, act) == HIDDEN


@pytest.mark.parametrize("act", list(Act))
@pytest.mark.parametrize("actor", [member, moderator])
def test_a_private_job_does_not_exist_for_anyone_else(act: Act, actor: Actor) -> None:
    assert outcome(PRIVATE, actor, act) == HIDDEN


@pytest.mark.parametrize("act", list(Act))
def test_a_deleted_or_missing_job_is_hidden_from_everyone(act: Act) -> None:
    deleted = replace(JOB, deleted_at=NOW)
    for actor in (requester, moderator):
        assert outcome(deleted, actor, act) == HIDDEN
        assert outcome(None, actor, act) == HIDDEN


@pytest.mark.parametrize("act", NEW_EDITS)
def test_anyone_in_the_server_may_start_from_a_public_result(act: Act) -> None:
    assert outcome(JOB, member, act) == ALLOWED


def test_show_is_for_the_requester_and_the_servers_moderators() -> None:
    assert outcome(JOB, member, Act.SHOW) == HIDDEN
    assert outcome(JOB, moderator, Act.SHOW) == ALLOWED


@pytest.mark.parametrize("act", [Act.DELETE, Act.CANCEL])
def test_managing_a_public_job_is_for_its_requester_and_moderators(act: Act) -> None:
    assert outcome(JOB, member, act) == REFUSED
    assert outcome(JOB, moderator, act) == ALLOWED


def test_a_dm_job_lives_only_in_its_requesters_dms() -> None:
    assert outcome(DM_JOB, requester_in_dm, Act.SHOW) == ALLOWED
    assert outcome(DM_JOB, stranger_in_dm, Act.INFO) == HIDDEN
    assert outcome(DM_JOB, requester, Act.INFO) == HIDDEN


def test_hidden_and_missing_say_the_same_words() -> None:
    with pytest.raises(JobHidden) as missing:
        check(None, member, Act.SHOW, 7)
    with pytest.raises(JobHidden) as private:
        check(PRIVATE, member, Act.SHOW, 7)
    assert missing.value.message == private.value.message
    assert not visible(PRIVATE, moderator) and visible(JOB, member)
