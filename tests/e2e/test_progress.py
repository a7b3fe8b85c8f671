"""Progress goes beside the edit: showing it never waits for Discord, and the result comes last."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import discord
import pytest

from bot.edits import Progress
from cogs.delivery import PROGRESS_GAP
from storage.jobs import JobState
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import has_image, shows
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png


async def test_showing_progress_never_waits_for_discord_and_the_result_comes_last(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    runflow.hold = True
    await discord_fake.slash("edit", prompt="slow one", image=discord_fake.add_cdn_file(png(), "p.png"))
    run = await runflow.wait_for_run()
    status = await discord_fake.wait_for_message(shows("Editing"))
    assert retouch.bot is not None
    job = await retouch.bot.jobs.get(1)
    assert job is not None
    answer, asked = asyncio.Event(), asyncio.Event()
    held: list[int] = []
    edit_message = discord.Webhook.edit_message

    async def slow(self: discord.Webhook, message_id: int, **fields: Any) -> Any:
        if "Fetching" in str(fields.get("content")):
            held.append(message_id)
            asked.set()
            await answer.wait()  # Discord is slow to answer this one
        return await edit_message(self, message_id, **fields)

    monkeypatch.setattr(discord.Webhook, "edit_message", slow)
    showing = asyncio.ensure_future(retouch.bot.delivery.show_progress(job, Progress(JobState.DELIVERING)))
    done, _ = await asyncio.wait({showing}, timeout=5)  # the bound only ends a wait that would not
    assert done, "show_progress waited for Discord's answer"
    await asyncio.wait_for(asked.wait(), 5)  # sent once the gap after the last edit has passed
    assert held == [int(status["id"])]
    runflow.release()
    await runflow.wait_finished(run.id)
    answer.set()
    await discord_fake.wait_for_message(has_image)
    await retouch.bot.jobs.wait_settled(1)
    pointer = await discord_fake.wait_for_message(lambda m: "Done — see below" in str(m.get("content")))
    assert pointer["id"] == status["id"]  # the pointer, after the progress


async def test_a_delivered_edit_is_charged_and_done_while_its_status_still_becomes_the_pointer(
    retouch: InProcessBot, discord_fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = asyncio.Event()
    pointing: list[int] = []
    edit_message = discord.Webhook.edit_message

    async def slow(self: discord.Webhook, message_id: int, **fields: Any) -> Any:
        if "Done — see below" in str(fields.get("content")):
            pointing.append(message_id)
            await answer.wait()  # Discord is slow to answer the pointer
        return await edit_message(self, message_id, **fields)

    monkeypatch.setattr(discord.Webhook, "edit_message", slow)
    await discord_fake.slash("edit", prompt="quick one", image=discord_fake.add_cdn_file(png(), "p.png"))
    await discord_fake.wait_for_message(has_image)
    assert retouch.bot is not None
    # The bound only ends a wait that would not: before, the charge waited for the pointer.
    job = await asyncio.wait_for(retouch.bot.jobs.wait_settled(1), 10)
    assert job.state is JobState.DONE and job.credits_charged > 0
    assert len(pointing) == 1 and "Done" not in discord_fake.messages[pointing[0]]["content"]
    answer.set()
    pointer = await discord_fake.wait_for_message(lambda m: "Done — see below" in str(m.get("content")))
    assert int(pointer["id"]) == pointing[0]


async def test_stages_that_pass_within_a_second_are_shown_as_the_last_of_them(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    """An edit through a quick host went queued, sending and editing in well under a second:
    three edits of the status message within milliseconds, nobody could read them. Now the
    first is shown, then at most one a second, the newest; the result drops what still waits."""
    await discord_fake.slash("edit", prompt="quick", image=discord_fake.add_cdn_file(png(), "p.png"))
    await discord_fake.wait_for_message(has_image)
    assert retouch.bot is not None
    await retouch.bot.jobs.wait_settled(1)
    await discord_fake.wait_for_message(lambda m: "Done — see below" in str(m.get("content")))
    shown = [
        r.time
        for r in discord_fake.requests
        if r.method == "PATCH" and "/webhooks/" in r.path and "Done" not in str((r.json or {}).get("content"))
    ]
    assert shown, "the first stage was not shown"
    gaps = [later - earlier for earlier, later in itertools.pairwise(shown)]
    assert all(gap > PROGRESS_GAP * 0.9 for gap in gaps), gaps
