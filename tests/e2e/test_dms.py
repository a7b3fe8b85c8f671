"""/edit in a direct message with the bot: off by default, and when on, paid from the DM allowance.

DMs have no server, so their credits are kept under the pseudo-server 0 (`bot.credits.DM_GUILD`)
with `credits.dm_allowance` per period; a member's server credits must not move.
"""

from __future__ import annotations

import re

import pytest

from bot.credits import DM_GUILD
from storage.ledger import EntryKind
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, buttons, has_image, private_answer
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png

DMS_ON = {"RETOUCH_EDITING__ALLOW_DMS": "true", "RETOUCH_CREDITS__DM_ALLOWANCE": "30"}
DMS_ON_NOTHING_TO_SPEND = {"RETOUCH_EDITING__ALLOW_DMS": "true", "RETOUCH_CREDITS__DM_ALLOWANCE": "0"}
SERVER_ALLOWANCE = 1000  # RETOUCH_CREDITS__DEFAULT_ALLOWANCE in tests/e2e/conftest.py


def sentences(text: str) -> int:
    return len(re.findall(r"[.!?](?:\s|$)", text))


async def high_quality_price(retouch: InProcessBot) -> int:
    """What a default /edit (one high-quality 1K image) costs, from the bot's own price table."""
    assert retouch.bot is not None
    return retouch.bot.credits.price_table()["high"]["1K"]


async def test_edit_in_a_dm_is_refused_privately_when_dms_are_off(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    image = discord_fake.add_cdn_file(png(), "p.png")
    interaction = await discord_fake.slash("edit", dm=True, prompt="brighter", image=image)
    answer = await private_answer(interaction)
    assert "direct messages" in answer and sentences(answer) == 1
    refusal = interaction.original()
    assert refusal is not None and refusal["channel_id"] == str(discord_fake.dm_channel_id())
    assert runflow.runs == {}
    assert retouch.bot is not None and await retouch.bot.jobs.get(1) is None


async def test_edit_image_in_a_dm_is_refused_before_its_form_when_dms_are_off(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    posted = await discord_fake.post_message(
        "mine", dm=True, attachments=[discord_fake.add_cdn_file(png(), "p.png")]
    )
    response = await (await discord_fake.message_command("Edit image", posted)).wait_response()
    assert response["type"] == 4 and response["data"]["flags"] & EPHEMERAL
    assert "direct messages" in response["data"]["content"]


@pytest.mark.parametrize("overrides", [DMS_ON])
async def test_edit_in_a_dm_is_delivered_there_and_paid_from_the_dm_allowance(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    assert retouch.bot is not None
    member, dm = discord_fake.member_id, str(discord_fake.dm_channel_id())
    image = discord_fake.add_cdn_file(png(), "p.png")
    interaction = await discord_fake.slash("edit", dm=True, prompt="brighter", image=image)
    assert (await interaction.wait_response())["type"] == 5
    result = await discord_fake.wait_for_message(has_image)
    assert result["channel_id"] == dm and "Refine" in buttons(result)
    assert not result["flags"] & EPHEMERAL and "brighter" in result["content"]
    assert len(runflow.runs) == 1
    refine = await discord_fake.click(result, "Refine")  # in the DM, as the member sees it
    assert refine.in_dm and (await refine.wait_modal())["title"] == "Refine this edit"
    job = await retouch.bot.jobs.wait_settled(1)
    assert (job.guild_id, job.channel_id) == (None, int(dm))

    price = await high_quality_price(retouch)
    ledger = await retouch.bot.credits.history(DM_GUILD, member)
    assert {entry.kind for entry in ledger} >= {EntryKind.RESERVE, EntryKind.CAPTURE}
    assert (await retouch.bot.credits.balance(DM_GUILD, member)).available == 30 - price
    balance = await (await discord_fake.slash("credits", subcommand="balance", dm=True)).wait_response()
    assert balance["data"]["flags"] & EPHEMERAL and f"**{30 - price} credits**" in balance["data"]["content"]
    server = await retouch.bot.credits.balance(discord_fake.guild_id, member)
    assert (server.available, server.reserved) == (SERVER_ALLOWANCE, 0)
    assert await retouch.bot.credits.history(discord_fake.guild_id, member) == []
    assert discord_fake.unanswered() == []


@pytest.mark.parametrize("overrides", [DMS_ON_NOTHING_TO_SPEND])
async def test_edit_in_a_dm_without_a_dm_allowance_is_refused_and_costs_nothing(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    assert retouch.bot is not None
    image = discord_fake.add_cdn_file(png(), "p.png")
    interaction = await discord_fake.slash("edit", dm=True, prompt="brighter", image=image)
    answer = await private_answer(interaction)
    price = await high_quality_price(retouch)
    assert f"costs {price} credits but you have 0" in answer
    # The public "thinking" message was withdrawn: only the member's private answer is left.
    assert all(message["flags"] & EPHEMERAL for message in discord_fake.messages.values())
    assert runflow.runs == {}
    assert await retouch.bot.credits.history(DM_GUILD, discord_fake.member_id) == []
    assert (await retouch.bot.credits.balance(DM_GUILD, discord_fake.member_id)).reserved == 0
