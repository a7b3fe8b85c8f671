"""Text the bot did not write (a host's error, a prompt) can neither ping anyone nor format.

Retouch runs in servers full of strangers: a host's error message is chosen by whoever controls
the host's output, and a prompt by any member. The fake Discord decides who a message pings
from its `allowed_mentions` the way Discord does, so these tests see exactly who was notified.
"""

from __future__ import annotations

import re
from typing import Any

from tests.e2e.conftest import InProcessBot
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png

# Routes that create or edit a message the bot writes, and interaction callbacks.
MESSAGE_WRITES = (r"/channels/\d+/messages", r"/webhooks/\d+/[^/]+", r"/interactions/\d+/[^/]+/callback")


def hostile(fake: FakeDiscord) -> tuple[str, int, int]:
    """Text that pings a bystander, a role and everyone, and breaks out into markdown."""
    bystander = fake.add_member("Bystander")
    role = fake.add_role("Pingable")
    return f"<@{bystander}> <@&{role}> @everyone @here **loud** `code` > quote", bystander, role


def message_writes(fake: FakeDiscord) -> list[dict[str, Any]]:
    """Every payload that carried text to a message (interaction callbacks carry it in `data`)."""
    payloads = []
    for request in fake.requests:
        if request.method not in ("POST", "PATCH") or not isinstance(request.json, dict):
            continue
        if not any(re.search(route, request.path) for route in MESSAGE_WRITES):
            continue
        payload = request.json.get("data", request.json) if "callback" in request.path else request.json
        if isinstance(payload, dict) and (payload.get("content") or payload.get("embeds")):
            payloads.append(payload)
    return payloads


def inert_history(response: dict[str, Any], bystander: int) -> bool:
    content = str(response["data"]["content"])
    return "sky" in content and f"<@{bystander}>" not in content and "@everyone" not in content


async def test_a_host_error_posted_in_the_channel_pings_only_the_requester(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    text, bystander, role = hostile(discord_fake)
    runflow.fail_runs = {"failure_code": "PROVIDER_ERROR", "failure_message": text}
    runflow.hold = True
    await discord_fake.slash("edit", prompt=f"sky {text}", image=discord_fake.add_cdn_file(png(), "p.png"))
    await discord_fake.wait_for_message(lambda m: "Editing" in (m.get("content") or ""))
    discord_fake.token_lifetime = 0.0  # the failure must go to the channel with a mention
    runflow.release()
    failed = await discord_fake.wait_for_message(lambda m: "❌" in (m.get("content") or ""))

    assert int(failed["channel_id"]) == discord_fake.channel_id
    assert [int(user["id"]) for user in failed["mentions"]] == [discord_fake.member_id]
    assert failed["mention_roles"] == [] and failed["mention_everyone"] is False
    content = failed["content"]
    assert f"<@{bystander}>" not in content and f"<@&{role}>" not in content
    assert "@everyone" not in content and "@here" not in content
    assert "\\*\\*loud\\*\\*" in content and "\\`code\\`" in content
    # Every message of the edit, and the member's history, could ping nobody but the requester.
    history = await discord_fake.slash("history")
    assert inert_history(await history.wait_response(), bystander)
    payloads = message_writes(discord_fake)
    assert len(payloads) >= 3  # the progress updates, the failure and the history
    for payload in payloads:
        allowed = payload.get("allowed_mentions")
        assert allowed is not None, payload
        assert not set(allowed.get("parse") or []) & {"users", "roles", "everyone"}, payload
        assert {int(user) for user in allowed.get("users") or []} <= {discord_fake.member_id}, payload
        assert not allowed.get("roles"), payload


async def test_a_moderators_reason_is_shown_inert(retouch: InProcessBot, discord_fake: FakeDiscord) -> None:
    text, bystander, _ = hostile(discord_fake)
    for command in ("grant", "revoke", "block"):
        amount = {"amount": 5} if command != "block" else {}
        answer = await (
            await discord_fake.slash(
                "quota",
                subcommand=command,
                user=discord_fake.owner_id,
                member=discord_fake.member_id,
                reason=text,
                **amount,
            )
        ).wait_response()
        content = answer["data"]["content"]
        assert f"<@{bystander}>" not in content and "@everyone" not in content, content
        assert "\\*\\*loud\\*\\*" in content, content
