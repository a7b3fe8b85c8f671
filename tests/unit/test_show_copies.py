"""A copy of a result that /show posts carries the job's buttons from the moment it is posted."""

from __future__ import annotations

import asyncio

import pytest

from bot.jobs.access import Act, Actor, JobHidden
from tests.conftest import StaticFiles
from tests.images import png
from tests.unit.test_jobs import Harness, order


async def test_a_press_on_a_copy_show_is_still_recording_waits_for_the_record(
    harness: Harness, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await harness.service.wait_settled(
        (await harness.submit(order(static_files.add("a.png", png())))).id
    )
    copy_id = 4242
    looked = asyncio.Event()
    carries = harness.repo.carries

    async def carries_then_tell(job_id: int, message_id: int) -> bool:
        found = await carries(job_id, message_id)
        looked.set()
        return found

    monkeypatch.setattr(harness.repo, "carries", carries_then_tell)
    actor = Actor(job.user_id, job.guild_id)
    async with harness.service.showing(job) as record:
        press = asyncio.create_task(harness.service.acting_on(job.id, actor, Act.INFO, message_id=copy_id))
        await looked.wait()  # the press found no record of the copy yet
        await record(job.channel_id, copy_id)
    assert (await press).id == job.id


async def test_a_press_on_a_message_nobody_is_posting_is_refused(
    harness: Harness, static_files: StaticFiles
) -> None:
    job = await harness.service.wait_settled(
        (await harness.submit(order(static_files.add("a.png", png())))).id
    )
    with pytest.raises(JobHidden):
        await harness.service.acting_on(job.id, Actor(job.user_id, job.guild_id), Act.INFO, message_id=4242)
