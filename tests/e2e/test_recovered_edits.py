"""An edit acknowledged just before the bot stopped is written at its next start from the
journal, and decided there as a live edit is: by the server's rules and the member's choices as
they are then. The journal entry is written before the acknowledgement, so it knows nothing the
database holds; a refusal is told to the member alone and costs nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.edits import EditOrder
from bot.jobs.journal import HandedOn
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, has_image, text
from tests.fakes.discord import FakeDiscord, Interaction
from tests.fakes.runflow import FakeRunflow
from tests.images import png


async def acknowledged_then_stopped(
    retouch: InProcessBot, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> Interaction:
    """`/edit` acknowledged (journaled, then deferred), and the bot stopped before its job is
    written, as a crash at that moment leaves it; its next start finds the edit in the journal."""
    assert retouch.bot is not None
    stopped = asyncio.Event()

    async def never_written(order: EditOrder, **kwargs: Any) -> HandedOn:
        await stopped.wait()
        return HandedOn()  # the stopped process says nothing more

    monkeypatch.setattr(retouch.bot.admission, "admit", never_written)
    image = fake.add_cdn_file(png(64, 48), "p.png")
    interaction = await fake.slash("edit", image=image, **options)
    assert (await interaction.wait_response())["type"] == 5  # "thinking": the member was answered
    await retouch.stop()
    stopped.set()
    return interaction


async def test_an_edit_recovered_on_a_server_paused_meanwhile_is_refused_privately_once(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused = await discord_fake.slash("retouch", subcommand="pause", user=discord_fake.owner_id)
    assert "paused on this server" in (await paused.wait_response())["data"]["content"]
    interaction = await acknowledged_then_stopped(retouch, discord_fake, monkeypatch, prompt="while paused")
    bot = await retouch.start()
    told = await interaction.wait_followup(predicate=lambda m: "paused" in text(m))
    assert told["flags"] & EPHEMERAL and "while paused" in text(told)
    assert interaction.original_id in discord_fake.deleted_messages, "the public status stays"
    assert await bot.jobs.get(1) is None and runflow.runs == {}
    again = await retouch.restart()  # taken out of the journal: neither run nor told again
    assert await again.jobs.get(1) is None
    assert len([m for m in discord_fake.messages.values() if "while paused" in text(m)]) == 1


@pytest.mark.parametrize("overrides", [{"RETOUCH_CREDITS__CONFIRM_ABOVE": "10"}])
async def test_a_recovered_edit_whose_cost_was_never_confirmed_asks_to_be_run_again(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    interaction = await acknowledged_then_stopped(
        retouch, discord_fake, monkeypatch, prompt="costly", quality="high", private=True
    )
    bot = await retouch.start()
    status = await discord_fake.wait_for_message(
        lambda m: int(m["id"]) == interaction.original_id and "confirmation" in text(m)
    )
    assert status["flags"] & EPHEMERAL and "14 credits" in text(status)
    assert await bot.jobs.get(1) is None and runflow.runs == {}
    balance = await bot.credits.balance(discord_fake.guild_id, discord_fake.member_id)
    assert balance.reserved == 0


async def test_a_recovered_edit_keeps_the_members_notify_choice(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    await (await discord_fake.slash("notify", mention="off")).wait_response()
    await acknowledged_then_stopped(retouch, discord_fake, monkeypatch, prompt="quietly")
    bot = await retouch.start()
    result = await discord_fake.wait_for_message(has_image)
    assert result.get("mentions") == []
    job = await bot.jobs.wait_settled(1)
    assert (job.state.value, job.options.mention) == ("done", False)
