"""A Runflow run that ends `partial_succeeded` is delivered and charged for what it made."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import has_image
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png

# An estimate far from Runflow's price, so the spend shows which of the two was recorded.
ESTIMATE = {"RETOUCH_PROVIDERS__RUNFLOW__USD_PER_IMAGE": '{"low": 1, "medium": 1, "high": 1}'}


@pytest.mark.parametrize("overrides", [ESTIMATE])
async def test_a_partial_run_delivers_and_charges_only_the_images_it_made(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.partial_images = 1
    image = discord_fake.add_cdn_file(png(), "p.png")
    await discord_fake.slash("edit", prompt="two please", image=image, count=2, quality="high")
    result = await discord_fake.wait_for_message(has_image)
    assert len(result["attachments"]) == 1
    assert retouch.bot is not None
    job = await retouch.bot.jobs.wait_settled(1)
    run = await runflow.wait_for_run()
    assert run.status_code == "partial_succeeded" and run.cost == "0.133"
    # One of the two images reserved is charged, and the spend is Runflow's own `cost`.
    assert job.credits_charged == retouch.bot.credits.price_table()["high"]["1K"]
    assert job.usd_micros == 133_000
    balance = await retouch.bot.credits.balance(discord_fake.guild_id, discord_fake.member_id)
    assert balance.reserved == 0 and balance.available == 1000 - job.credits_charged
