"""Nobody reaches an edit that is not theirs: /show, the job buttons and /retouch, tried by
members and moderators of another server, strangers, and with private edits."""

from __future__ import annotations

import logging
import re
from typing import Any

import discord
import pytest

from cogs.buttons import result_message
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, has_image, shows, text
from tests.fakes.discord import FakeDiscord, Guild
from tests.fakes.runflow import FakeRunflow
from tests.images import png

HIDDEN = re.compile(r"There is no edit #\d+ you can use here; /history lists yours\.")


async def edit(
    fake: FakeDiscord,
    prompt: str = "make it blue",
    *,
    user: int | None = None,
    guild: Guild | None = None,
    **options: Any,
) -> dict[str, Any]:
    """An edit, and its result message once delivered."""
    await fake.slash(
        "edit", prompt=prompt, image=fake.add_cdn_file(png(), "p.png"), user=user, in_guild=guild, **options
    )
    return await fake.wait_for_message(lambda m: has_image(m) and prompt in text(m))


async def settled(retouch: InProcessBot, job_id: int) -> None:
    """The result message shows a moment before the row says done."""
    assert retouch.bot is not None
    await retouch.bot.jobs.wait_settled(job_id)


def hidden(response: dict[str, Any]) -> bool:
    """The one answer for a job that is missing or not the member's: private, and the same words."""
    data = response["data"]
    return (
        response["type"] == 4 and bool(data["flags"] & EPHEMERAL) and bool(HIDDEN.fullmatch(data["content"]))
    )


def results(fake: FakeDiscord) -> list[dict[str, Any]]:
    return [m for m in fake.messages.values() if m.get("attachments")]


async def test_show_never_crosses_servers(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    """An admin of another server asking for this server's job gets the answer a missing job gets."""
    await edit(discord_fake, "our secret")
    await settled(retouch, 1)
    other = discord_fake.add_guild()
    before = len(results(discord_fake))
    theirs = await (
        await discord_fake.slash("show", job=1, user=other.owner_id, in_guild=other)
    ).wait_response()
    missing = await (
        await discord_fake.slash("show", job=999, user=other.owner_id, in_guild=other)
    ).wait_response()
    assert hidden(theirs) and hidden(missing)
    assert theirs["data"]["content"].replace("#1 ", "#999 ") == missing["data"]["content"]
    assert "our secret" not in str(theirs)
    assert len(results(discord_fake)) == before


async def test_private_edit_is_shown_only_to_its_requester_and_only_privately(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    await edit(discord_fake, "just for me", private=True)
    await settled(retouch, 1)
    moderator = await (await discord_fake.slash("show", job=1, user=discord_fake.owner_id)).wait_response()
    assert hidden(moderator)
    mine = await (await discord_fake.slash("show", job=1)).wait_response()
    assert mine["type"] == 4 and mine["data"]["flags"] & EPHEMERAL
    assert "just for me" in text(mine["data"]) and mine["data"]["attachments"]


async def test_moderator_shows_a_public_edit_and_its_buttons_work_on_the_copy(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await edit(discord_fake, "for everyone")
    await settled(retouch, 1)
    stranger = discord_fake.add_member("stranger")
    refused = await (await discord_fake.slash("show", job=1, user=stranger)).wait_response()
    assert hidden(refused)
    shown = await (await discord_fake.slash("show", job=1, user=discord_fake.owner_id)).wait_response()
    assert shown["type"] == 4 and not shown["data"].get("flags", 0) & EPHEMERAL
    copy = next(m for m in results(discord_fake) if m["id"] != result["id"])
    info = await (await discord_fake.click(copy, "Info", user=stranger)).wait_response()
    assert info["data"]["embeds"][0]["title"] == "Edit #1"


async def test_a_deleted_result_stays_deleted(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await edit(discord_fake, "regret")
    await settled(retouch, 1)
    assert retouch.bot is not None
    kept = await retouch.bot.jobs.kept_outputs(1)
    assert kept
    await (await discord_fake.click(result, "Delete")).wait_response()
    await discord_fake.wait_for_request("DELETE", rf"/messages/(@original|{result['id']})$")
    assert int(result["id"]) not in discord_fake.messages
    for user in (discord_fake.member_id, discord_fake.owner_id):
        assert hidden(await (await discord_fake.slash("show", job=1, user=user)).wait_response())
    assert not any(path.exists() for path in kept)
    history = await (await discord_fake.slash("history")).wait_response()
    assert "regret" not in history["data"]["content"]


async def test_delete_also_removes_the_copies_that_show_posted(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await edit(discord_fake, "twice")
    await settled(retouch, 1)
    await (await discord_fake.slash("show", job=1)).wait_response()
    copy = next(m for m in results(discord_fake) if m["id"] != result["id"])
    await (await discord_fake.click(copy, "Delete")).wait_response()
    await discord_fake.wait_for_request("DELETE", rf"/channels/\d+/messages/{result['id']}$")
    assert not results(discord_fake)


async def test_buttons_act_only_on_a_message_that_carries_their_job(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    """A message the job service never recorded for the job (a copy made by any other path) is
    not the job's: its Delete removes nothing and its Info tells nothing."""
    await edit(discord_fake, "the original")
    await settled(retouch, 1)
    assert retouch.bot is not None
    channel = retouch.bot.get_partial_messageable(discord_fake.channel_id)
    forged = result_message(1, "a copy", [discord.File(__file__, filename="x.png")], upscale=False)
    sent = await channel.send(**forged)
    copy = discord_fake.messages[sent.id]
    for label in ("Delete", "Info", "Retry"):
        answer = await (await discord_fake.click(copy, label)).wait_response()
        assert hidden(answer), label
    assert sent.id in discord_fake.messages
    assert len(runflow.runs) == 1
    job = await retouch.bot.jobs.get(1)
    assert job is not None and job.deleted_at is None


async def test_private_edit_buttons_answer_only_its_requester(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    """Info, Refine, Retry and Vary of a private edit reveal and re-run nothing for anyone else."""
    result = await edit(discord_fake, "private prompt", private=True)
    await settled(retouch, 1)
    stranger = discord_fake.add_member("stranger")
    for label in ("Info", "Refine", "Retry", "Vary", "Delete"):
        for user in (stranger, discord_fake.owner_id):
            answer = await (await discord_fake.click(result, label, user=user)).wait_response()
            assert hidden(answer), (label, user)
            assert "private prompt" not in str(answer)
    assert len(runflow.runs) == 1
    info = await (await discord_fake.click(result, "Info")).wait_response()
    assert "private prompt" in info["data"]["embeds"][0]["description"]


async def test_cancel_by_a_moderator_counts_only_in_the_jobs_server(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    """An admin of another server who is a plain member here cannot cancel a member's edit here."""
    runflow.hold = True
    other = discord_fake.add_guild()
    admin_elsewhere = discord_fake.add_member("admin elsewhere", user_id=other.owner_id)
    await discord_fake.slash("edit", prompt="keep going", image=discord_fake.add_cdn_file(png(), "p.png"))
    running = await discord_fake.wait_for_message(shows("Editing"))
    refused = await (await discord_fake.click(running, "Cancel", user=admin_elsewhere)).wait_response()
    assert "Only the member who asked" in refused["data"]["content"]
    assert refused["data"]["flags"] & EPHEMERAL
    assert retouch.bot is not None
    job = await retouch.bot.jobs.get(1)
    assert job is not None and not job.state.final
    runflow.release()
    await discord_fake.wait_for_message(has_image)


async def test_retouch_status_and_budget_show_an_admin_only_their_server(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    other = discord_fake.add_guild()
    runflow.hold = True
    await discord_fake.slash("edit", prompt="here", image=discord_fake.add_cdn_file(png(), "p.png"))
    await runflow.wait_for_run()
    # The other server has nothing in progress and has spent nothing.
    status = await (
        await discord_fake.slash("retouch", subcommand="status", user=other.owner_id, in_guild=other)
    ).wait_response()
    assert status["data"]["flags"] & EPHEMERAL
    assert "edits in this server: 0 waiting, 0 in progress" in status["data"]["content"]
    assert "Host spend in this server" in status["data"]["content"]
    assert "$0.00" in status["data"]["content"] and "$0.13" not in status["data"]["content"]
    budget = await (
        await discord_fake.slash("retouch", subcommand="budget", user=other.owner_id, in_guild=other)
    ).wait_response()
    assert "this server" in budget["data"]["content"] and "$0.13" not in budget["data"]["content"]
    # The bot's owner sees every server, with the caps.
    owner = await (
        await discord_fake.slash("retouch", subcommand="status", user=discord_fake.owner_id)
    ).wait_response()
    assert "edits in all servers: 0 waiting, 1 in progress" in owner["data"]["content"]
    assert "$0.13" in owner["data"]["content"]
    runflow.release()
    await discord_fake.wait_for_message(has_image)


async def test_a_failing_button_gets_one_sentence_with_a_reference_in_the_log(
    retouch: InProcessBot,
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = await edit(discord_fake)
    await settled(retouch, 1)
    assert retouch.bot is not None

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the chain table is on fire")

    monkeypatch.setattr(retouch.bot.jobs, "chain", broken)
    with caplog.at_level(logging.ERROR):
        answer = await (await discord_fake.click(result, "Info")).wait_response()
    assert answer["data"]["flags"] & EPHEMERAL
    found = re.search(r"reference ([0-9a-f]{8})", answer["data"]["content"])
    assert found is not None, answer["data"]["content"]
    assert "on fire" not in answer["data"]["content"]
    logged = [r for r in caplog.records if found[1] in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


async def test_a_failing_form_submit_is_answered_too(
    retouch: InProcessBot,
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    post = await discord_fake.post_message(attachments=[discord_fake.add_cdn_file(png(), "p.png")])
    opened = await discord_fake.message_command("Edit image", post)
    assert retouch.bot is not None

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("settings unreadable")

    monkeypatch.setattr(retouch.bot.guild_settings, "get", broken)
    submitted = await discord_fake.submit_modal(opened, {"prompt": "brighter"})
    answer = await submitted.wait_response()
    assert answer["type"] == 4 and answer["data"]["flags"] & EPHEMERAL
    assert "reference" in answer["data"]["content"]
    assert submitted not in discord_fake.unanswered()
