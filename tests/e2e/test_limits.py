"""Simultaneous /edits from one member: the in-flight limit holds, and the rest are told privately."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import private_answer
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png

BURST = 8


@pytest.mark.parametrize("overrides", [{"RETOUCH_EDITING__MAX_JOBS_PER_MEMBER": "1"}])
async def test_a_burst_of_edits_from_one_member_opens_one_job(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.hold = True  # the edit that gets in stays open while the others are answered
    attachment = discord_fake.add_cdn_file(png(), "photo.png")
    interactions = await asyncio.gather(
        *(discord_fake.slash("edit", prompt=f"burst {n}", image=attachment) for n in range(BURST))
    )
    answers = [asyncio.create_task(private_answer(interaction)) for interaction in interactions]
    refusals: list[str] = []
    pending = set(answers)
    while len(refusals) < BURST - 1 and pending:
        done, pending = await asyncio.wait(pending, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            break  # the rest were let in: the count below says how many
        refusals += [task.result() for task in done if task.exception() is None]
    for task in pending:
        task.cancel()
    assert retouch.bot is not None
    jobs = await retouch.bot.jobs.recent(interactions[0].user_id, discord_fake.guild_id, limit=BURST + 1)
    assert len([job for job in jobs if not job.state.final]) == 1
    assert len(refusals) == BURST - 1
    assert all("You already have 1 edits in progress" in answer for answer in refusals)
    runflow.release()
