"""/retouch for server admins and the owner, and the server rules it sets, seen by members."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, has_image, private_answer, shows
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png

MANAGE_GUILD = 1 << 5


async def reply(fake: FakeDiscord, *args: object, **options: object) -> str:
    response = await (await fake.slash(*args, **options)).wait_response()  # type: ignore[arg-type]
    assert response["data"]["flags"] & EPHEMERAL
    return str(response["data"]["content"])


async def edit(fake: FakeDiscord) -> Any:
    return await fake.slash("edit", prompt="make it blue", image=fake.add_cdn_file(png(), "p.png"))


async def refused(fake: FakeDiscord) -> str:
    return await private_answer(await edit(fake))


async def test_status_for_admins_and_refusal_for_members(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    status = await reply(discord_fake, "retouch", subcommand="status", user=discord_fake.owner_id)
    assert "**Retouch 0.1.0**" in status and "runflow closed" in status and "taking edits" in status
    refused = await reply(discord_fake, "retouch", subcommand="status")
    assert "Only server admins" in refused


async def test_pause_stops_new_edits_on_this_server_and_resume_restarts_them(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    admin = discord_fake.add_member("admin", permissions=MANAGE_GUILD)
    assert "paused on this server" in await reply(discord_fake, "retouch", subcommand="pause", user=admin)
    assert "paused on this server by its moderators" in await refused(discord_fake)
    assert runflow.runs == {}
    assert "resumed" in await reply(discord_fake, "retouch", subcommand="resume", user=admin)
    await edit(discord_fake)
    await discord_fake.wait_for_message(has_image)
    audit = await reply(discord_fake, "retouch", subcommand="audit", user=admin)
    assert f"<@{admin}> resume" in audit and f"<@{admin}> pause" in audit


async def test_only_the_owner_pauses_everywhere(retouch: InProcessBot, discord_fake: FakeDiscord) -> None:
    admin = discord_fake.add_member("admin", permissions=MANAGE_GUILD)
    assert "Only the bot's owner" in await reply(
        discord_fake, "retouch", subcommand="pause", user=admin, everywhere=True
    )
    assert "every server" in await reply(
        discord_fake, "retouch", subcommand="pause", user=discord_fake.owner_id, everywhere=True
    )
    assert "not taking new edits" in await refused(discord_fake)


async def test_server_defaults_apply_to_members_edits(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    saved = await reply(
        discord_fake, "retouch", subcommand="settings", user=discord_fake.owner_id, quality="low", count=2
    )
    assert saved.startswith("Saved.") and "quality low" in saved
    await edit(discord_fake)
    run = await runflow.wait_for_run()
    assert run.input["quality"] == "low" and run.input["num_images"] == 2


async def test_channel_rules_refuse_privately(retouch: InProcessBot, discord_fake: FakeDiscord) -> None:
    assert retouch.bot is not None
    await retouch.bot.guild_settings.update(
        discord_fake.guild_id, actor_id=discord_fake.owner_id, allowed_channels=[42]
    )
    assert "not allowed in this channel; use <#42>" in await refused(discord_fake)


async def test_nsfw_results_are_blocked_by_default_and_cost_nothing(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.nsfw = True
    await edit(discord_fake)
    blocked = await discord_fake.wait_for_message(shows("❌"))
    assert "flagged the result as NSFW" in blocked["content"] and not blocked["attachments"]
    assert retouch.bot is not None
    job = await retouch.bot.jobs.wait_settled(1)
    assert job.state.value == "failed" and job.credits_charged == 0


async def test_nsfw_results_are_spoilered_when_the_server_says_so(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    await reply(discord_fake, "retouch", subcommand="settings", user=discord_fake.owner_id, nsfw="spoiler")
    runflow.nsfw = True
    await edit(discord_fake)
    result = await discord_fake.wait_for_message(has_image)
    assert result["attachments"][0]["filename"].startswith("SPOILER_")


async def test_budget_shows_spend_against_caps(retouch: InProcessBot, discord_fake: FakeDiscord) -> None:
    budget = await reply(discord_fake, "retouch", subcommand="budget", user=discord_fake.owner_id)
    assert "Today: $0.00 (no cap)" in budget


async def test_an_unexpected_failure_still_gets_a_private_answer(
    retouch: InProcessBot, discord_fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert retouch.bot is not None

    async def broken() -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(retouch.bot.credits, "spend", broken)
    answer = await reply(discord_fake, "retouch", subcommand="budget", user=discord_fake.owner_id)
    assert "Something went wrong on the bot's side" in answer
