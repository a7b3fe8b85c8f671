"""Retouch added to a member's own account (a user install): /edit, "Edit image", /credits,
/history and /show in a server that has not installed the bot and in group DMs.

There no server's credits, settings or moderators apply, so the edit is paid from the member's
personal allowance (`credits.personal_allowance`, kept under the pseudo-server
`bot.credits.PERSONAL_GUILD`; 0 turns personal use off) and the job belongs to the member alone,
like a DM job. Where the server denies Use External Apps, Discord shows the app's replies to the
member only, so the bot answers privately from the start. A server that installed Retouch works
as before, whether or not the member also installed it.
"""

from __future__ import annotations

import re

import pytest

from bot.credits import DM_GUILD, PERSONAL_GUILD
from storage.ledger import EntryKind
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, buttons, has_image, private_answer
from tests.fakes.discord import USE_EXTERNAL_APPS, FakeDiscord, Guild
from tests.fakes.runflow import FakeRunflow
from tests.images import png

PERSONAL_ON = {"RETOUCH_CREDITS__PERSONAL_ALLOWANCE": "30"}
MEMBER_COMMANDS = ("edit", "Edit image", "credits", "history", "show")


def price_of_default_edit(retouch: InProcessBot) -> int:
    """One high-quality 1K image, from the bot's own price table."""
    assert retouch.bot is not None
    return retouch.bot.credits.price_table()["high"]["1K"]


def server_without_the_bot(fake: FakeDiscord) -> Guild:
    """A server the member is in that never installed Retouch; the member installed it for themselves."""
    guild = fake.add_guild("No Retouch Here", with_bot=False)
    fake.add_member("member", guild=guild, user_id=fake.member_id)
    fake.install_for_user()
    return guild


async def test_member_commands_are_synced_for_user_installs_and_every_context(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    for name in MEMBER_COMMANDS:
        command = discord_fake.commands[name]
        assert sorted(command["integration_types"]) == [0, 1], name
        assert sorted(command["contexts"]) == [0, 1, 2], name
    quota = discord_fake.commands["quota"]  # moderators' commands stay with the server's install
    assert (quota["integration_types"] or [0]) == [0] and quota["contexts"] == [0]
    guild = server_without_the_bot(discord_fake)
    with pytest.raises(AssertionError, match="does not offer 'quota' in a server without the bot"):
        await discord_fake.slash("quota", subcommand="show", in_guild=guild)


@pytest.mark.parametrize("overrides", [PERSONAL_ON])
async def test_user_installed_edit_in_a_server_without_the_bot_is_paid_from_the_personal_allowance(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    assert retouch.bot is not None
    member, guild = discord_fake.member_id, server_without_the_bot(discord_fake)
    image = discord_fake.add_cdn_file(png(), "p.png")
    interaction = await discord_fake.slash("edit", in_guild=guild, prompt="brighter", image=image)
    assert interaction.owners == {"1": str(member)}
    assert (await interaction.wait_response())["type"] == 5
    result = await discord_fake.wait_for_message(has_image)
    assert result["channel_id"] == str(guild.channel_id) and not result["flags"] & EPHEMERAL
    assert "brighter" in result["content"] and "Refine" in buttons(result)
    job = await retouch.bot.jobs.wait_settled(1)
    assert (job.guild_id, job.channel_id) == (None, guild.channel_id)  # the member's alone

    price = price_of_default_edit(retouch)
    ledger = await retouch.bot.credits.history(PERSONAL_GUILD, member)
    assert {entry.kind for entry in ledger} >= {EntryKind.RESERVE, EntryKind.CAPTURE}
    assert (await retouch.bot.credits.balance(PERSONAL_GUILD, member)).available == 30 - price
    assert await retouch.bot.credits.history(guild.id, member) == []
    assert await retouch.bot.credits.history(DM_GUILD, member) == []
    assert await retouch.bot.credits.history(discord_fake.guild_id, member) == []
    balance = await discord_fake.slash("credits", subcommand="balance", in_guild=guild)
    answer = (await balance.wait_response())["data"]
    assert answer["flags"] & EPHEMERAL and f"**{30 - price} credits**" in answer["content"]
    history = await discord_fake.slash("history", in_guild=guild)
    assert "#1" in (await history.wait_response())["data"]["content"]
    assert discord_fake.unanswered() == []


@pytest.mark.parametrize("overrides", [PERSONAL_ON])
async def test_user_installed_edit_is_private_where_the_server_disallows_external_apps(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    assert retouch.bot is not None
    guild = server_without_the_bot(discord_fake)
    guild.deny_everyone(USE_EXTERNAL_APPS)
    image = discord_fake.add_cdn_file(png(), "p.png")
    interaction = await discord_fake.slash("edit", in_guild=guild, prompt="brighter", image=image)
    first = await interaction.wait_response()
    assert first["type"] == 5 and first["data"]["flags"] & EPHEMERAL
    result = await discord_fake.wait_for_message(has_image)
    assert result["flags"] & EPHEMERAL
    assert all(message["flags"] & EPHEMERAL for message in discord_fake.messages.values())
    assert (await retouch.bot.jobs.wait_settled(1)).private


@pytest.mark.parametrize("overrides", [PERSONAL_ON])
async def test_user_installed_edit_in_a_group_dm_is_paid_personally_and_never_crosses_to_other_members(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    assert retouch.bot is not None
    member, friend = discord_fake.member_id, discord_fake.add_member("friend")
    group = discord_fake.add_group_dm(member, friend)
    discord_fake.install_for_user()
    discord_fake.install_for_user(friend)
    image = discord_fake.add_cdn_file(png(), "p.png")
    interaction = await discord_fake.slash("edit", channel=group, prompt="brighter", image=image)
    assert (await interaction.wait_response())["type"] == 5
    result = await discord_fake.wait_for_message(has_image)
    assert result["channel_id"] == str(group) and not result["flags"] & EPHEMERAL
    job = await retouch.bot.jobs.wait_settled(1)
    assert job.guild_id is None
    price = price_of_default_edit(retouch)
    assert (await retouch.bot.credits.balance(PERSONAL_GUILD, member)).available == 30 - price

    # The friend sees the result in the group but cannot act on it or bring it back.
    refine = await discord_fake.click(result, "Refine", user=friend)
    assert "no edit #1" in await private_answer(refine)
    show = await discord_fake.slash("show", channel=group, user=friend, job=1)
    assert "no edit #1" in await private_answer(show)
    # The member can, in the group DM as anywhere else they use their own install.
    assert (await (await discord_fake.click(result, "Refine")).wait_modal())["title"] == "Refine this edit"
    shown = await discord_fake.slash("show", channel=group, job=1)
    assert (await shown.wait_response())["type"] == 4
    assert (await retouch.bot.credits.balance(PERSONAL_GUILD, friend)).reserved == 0


@pytest.mark.parametrize("overrides", [PERSONAL_ON])
async def test_edit_image_in_a_group_dm_edits_the_picture_the_bot_cannot_fetch(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    """The bot is not in the group DM, so it cannot read the message again when the form comes
    back; it keeps the message Discord sent with the command."""
    assert retouch.bot is not None
    friend = discord_fake.add_member("friend")
    group = discord_fake.add_group_dm(discord_fake.member_id, friend)
    discord_fake.install_for_user()
    picture = discord_fake.add_cdn_file(png(), "holiday.png")
    posted = await discord_fake.post_message("look", user=friend, attachments=[picture], channel=group)
    opened = await discord_fake.message_command("Edit image", posted)
    await opened.wait_modal()
    submit = await discord_fake.submit_modal(opened, {"prompt": "add snow"})
    assert (await submit.wait_response())["type"] == 5
    result = await discord_fake.wait_for_message(has_image)
    assert result["channel_id"] == str(group)
    job = await retouch.bot.jobs.wait_settled(1)
    assert job.guild_id is None and job.prompt == "add snow"


async def test_personal_use_is_refused_with_one_sentence_when_the_personal_allowance_is_zero(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    assert retouch.bot is not None
    guild = server_without_the_bot(discord_fake)
    image = discord_fake.add_cdn_file(png(), "p.png")
    interaction = await discord_fake.slash("edit", in_guild=guild, prompt="brighter", image=image)
    assert (await interaction.wait_response())["type"] == 4  # refused before any "thinking"
    answer = await private_answer(interaction)
    assert "turned off" in answer and len(re.findall(r"[.!?](?:\s|$)", answer)) == 1
    posted = await discord_fake.post_message("pic", attachments=[image], channel=guild.channel_id)
    menu = await (await discord_fake.message_command("Edit image", posted)).wait_response()
    assert menu["type"] == 4 and menu["data"]["content"] == answer  # before its form
    assert runflow.runs == {} and await retouch.bot.jobs.get(1) is None
    assert await retouch.bot.credits.history(PERSONAL_GUILD, discord_fake.member_id) == []


async def test_server_installed_edit_is_unchanged_for_a_member_who_also_installed_retouch(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    assert retouch.bot is not None
    member = discord_fake.member_id
    discord_fake.install_for_user()
    image = discord_fake.add_cdn_file(png(), "p.png")
    interaction = await discord_fake.slash("edit", prompt="brighter", image=image)
    assert interaction.owners == {"0": str(discord_fake.guild_id), "1": str(member)}
    result = await discord_fake.wait_for_message(has_image)
    assert result["channel_id"] == str(discord_fake.channel_id) and not result["flags"] & EPHEMERAL
    job = await retouch.bot.jobs.wait_settled(1)
    assert job.guild_id == discord_fake.guild_id
    assert await retouch.bot.credits.history(discord_fake.guild_id, member) != []
    assert await retouch.bot.credits.history(PERSONAL_GUILD, member) == []
