"""Discord misbehaving while results go out, with the bot in this process.

The result of an edit reaches the member by editing their original ("thinking") message
while its interaction token lives, else as a channel post with a mention, else by DM. Each
test breaks one of those ways at the moment the result is sent (the edit is held at the host
until the bot has shown "Editing", so the next edit of that message is the result) and checks
the final state, where the member finds the result or the notice, and the ledger.
"""

from __future__ import annotations

import pytest

from tests.fakes.discord import FakeDiscord
from tests.reliability.harness import JSON, NOT_TOLD, failure_notices, result_messages, wait_for
from tests.reliability.lab import BotLab


def channel_messages(fake: FakeDiscord) -> str:
    return rf"/channels/{fake.channel_id}/messages$"


async def at_upload(lab: BotLab, label: str, *, private: bool = False, expire_token: bool = False) -> str:
    """An edit held at the host until the member's message says "Editing"; then the next write
    to Discord for it is the result. The caller arms its fault and calls `lab.runflow.release()`."""
    lab.runflow.hold = True
    prompt = lab.prompt(label)
    await lab.ask(prompt, private=private)
    await lab.discord.wait_for_message(
        lambda m: prompt in (m.get("content") or "") and "Editing" in (m.get("content") or "")
    )
    if expire_token:
        lab.discord.token_lifetime = 0.0
    return prompt


def the_result(lab: BotLab, prompt: str) -> JSON:
    job = lab.job(prompt)
    assert job is not None
    [message] = result_messages(lab.discord, job.id)
    return message


async def delivered(lab: BotLab, prompt: str) -> None:
    problems = await lab.outcome([prompt])
    assert not problems, lab.report(problems)


async def test_a_429_with_via_on_the_result_is_waited_out(lab: BotLab) -> None:
    prompt = await at_upload(lab, "rate limited upload")
    lab.discord.rate_limit_next("POST", channel_messages(lab.discord), retry_after=0.3)
    lab.runflow.release()
    await delivered(lab, prompt)
    statuses = [r.status for r in lab.discord.requests if r.method == "POST" and r.files]
    assert statuses == [429, 200]


@pytest.mark.parametrize("status", [500, 502])
async def test_a_5xx_on_the_result_is_retried(lab: BotLab, status: int) -> None:
    prompt = await at_upload(lab, f"upload {status}")
    lab.discord.fail_next("POST", channel_messages(lab.discord), status)
    lab.runflow.release()
    await delivered(lab, prompt)
    job = lab.job(prompt)
    assert job is not None and int(the_result(lab, prompt)["id"]) == job.result_message_id


async def test_an_expired_token_posts_the_result_in_the_channel_with_a_mention(lab: BotLab) -> None:
    prompt = await at_upload(lab, "expired token", expire_token=True)
    lab.runflow.release()
    await delivered(lab, prompt)
    result = the_result(lab, prompt)
    assert int(result["channel_id"]) == lab.discord.channel_id
    assert f"<@{lab.discord.member_id}>" in result["content"]


async def test_a_429_and_a_500_on_the_channel_post_still_post_once(lab: BotLab) -> None:
    prompt = await at_upload(lab, "channel retries", expire_token=True)
    lab.discord.rate_limit_next("POST", channel_messages(lab.discord), retry_after=0.2)
    lab.discord.fail_next("POST", channel_messages(lab.discord), 500)
    lab.runflow.release()
    await delivered(lab, prompt)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [(403, 50013, "Missing Permissions"), (404, 10003, "Unknown Channel")],
    ids=["missing-permissions", "deleted-channel"],
)
async def test_a_channel_the_bot_cannot_post_in_sends_the_result_by_dm(
    lab: BotLab, status: int, code: int, message: str
) -> None:
    prompt = await at_upload(lab, f"channel {status}", expire_token=True)
    lab.discord.fail_next("POST", channel_messages(lab.discord), status, {"code": code, "message": message})
    lab.runflow.release()
    await delivered(lab, prompt)
    assert int(the_result(lab, prompt)["channel_id"]) != lab.discord.channel_id


async def test_a_private_edit_whose_token_expired_goes_by_dm_never_to_the_channel(lab: BotLab) -> None:
    prompt = await at_upload(lab, "private expired", private=True, expire_token=True)
    lab.runflow.release()
    await delivered(lab, prompt)
    assert int(the_result(lab, prompt)["channel_id"]) != lab.discord.channel_id
    assert not [
        r
        for r in lab.discord.requests
        if r.method == "POST" and r.path.endswith(f"/channels/{lab.discord.channel_id}/messages")
    ]


async def test_a_member_out_of_reach_is_refunded(lab: BotLab) -> None:
    """Token expired, channel closed to the bot, DMs closed: the result cannot go anywhere, so
    the edit fails and is refunded. The notice cannot go anywhere either; that is the only
    problem the judge may find."""
    prompt = await at_upload(lab, "out of reach", expire_token=True)
    channel = channel_messages(lab.discord)
    lab.discord.fail_next("POST", channel, 403, {"code": 50013, "message": "Missing Permissions"}, times=2)
    lab.discord.fail_next(
        "POST",
        r"/channels/\d+/messages$",
        403,
        {"code": 50007, "message": "Cannot send messages to this user"},
        times=2,
    )
    lab.runflow.release()
    await wait_for(
        lambda: True if lab.discord.faults_fired == 4 else None,
        events=lambda: [lab.discord.changed()],
        timeout=10,
        what="the result and the notice to try the channel and the DM",
    )
    problems = await lab.outcome([prompt], expect={"failed"}, told_within=0, tolerate={NOT_TOLD})
    assert not problems, lab.report(problems)
    job = lab.job(prompt)
    assert job is not None and not failure_notices(lab.discord, job)


async def test_a_413_on_the_result_ends_in_a_refund_and_a_notice(lab: BotLab) -> None:
    """Discord refuses the upload as too large (the channel's limit shrank since the member
    asked): nothing to retry, so the edit must end, refunded and told (or shrunk and posted).
    (Found by this suite: any refusal but 403/404 escaped delivery and left the job
    `delivering`, its credits held, until the next restart.)"""
    prompt = await at_upload(lab, "upload 413")
    lab.discord.fail_next(
        "POST", channel_messages(lab.discord), 413, {"code": 40005, "message": "Request entity too large"}
    )
    lab.runflow.release()
    await fault_fired(lab)
    problems = await lab.outcome([prompt], expect={"done", "failed"}, timeout=3)
    assert not problems, lab.report(problems)


async def test_a_503_on_the_channel_post_is_tried_again(lab: BotLab) -> None:
    """One 503 (which discord.py raises at once, unlike 500/502/504) on the channel post of a
    result whose token expired: an outage of Discord's, worth another try, never a stuck job."""
    prompt = await at_upload(lab, "channel 503", expire_token=True)
    lab.discord.fail_next(
        "POST", channel_messages(lab.discord), 503, {"code": 0, "message": "Service Unavailable"}
    )
    lab.runflow.release()
    await fault_fired(lab)
    problems = await lab.outcome([prompt], expect={"done"}, timeout=6)
    assert not problems, lab.report(problems)


async def fault_fired(lab: BotLab) -> None:
    await wait_for(
        lambda: True if lab.discord.faults_fired else None,
        events=lambda: [lab.discord.changed()],
        timeout=10,
        what="the fault to fire",
    )


async def test_a_gateway_disconnect_and_resume_with_edits_in_flight(lab: BotLab) -> None:
    """Three edits running at the host while the gateway drops and resumes; a fourth asked while
    the bot is away is delivered when it is back. Results travel over HTTP, not the gateway."""
    lab.runflow.hold = True
    others = [lab.discord.add_member(f"member {n}") for n in range(2)]
    prompts = [lab.prompt(f"in flight {n}") for n in range(3)]
    for prompt, user in zip(prompts, [None, *others], strict=True):
        await lab.ask(prompt, user=user)
    for prompt in prompts:
        await lab.wait_job(prompt, "running")
    await lab.discord.disconnect_gateway()
    late = lab.prompt("asked while away")
    await lab.ask(late)  # the fake delivers it once the bot has resumed
    await lab.discord.wait_ready()
    lab.runflow.hold = False
    lab.runflow.release()
    problems = await lab.outcome([*prompts, late])
    assert not problems, lab.report(problems)
    assert lab.discord.identifies == 1, "the bot re-identified instead of resuming"
