"""2K and 4K: asked for with /edit or Upscale, made only where the host can, charged for the size."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cogs.forms import UPSCALE_PROMPT
from tests.e2e.conftest import InProcessBot, env_for, settings_for
from tests.e2e.helpers import EPHEMERAL, buttons, has_image, private_answer, text
from tests.fakes.discord import FakeDiscord
from tests.fakes.fal import FakeFal
from tests.fakes.runflow import FakeRunflow
from tests.images import png


@pytest.fixture
async def fal() -> AsyncIterator[FakeFal]:
    fake = FakeFal()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def on_fal(
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    fal: FakeFal,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[InProcessBot]:
    """The bot with fal as its only host, which makes 1K, 2K and 4K."""
    env = env_for(
        discord_fake,
        runflow,
        tmp_path,
        {
            "RETOUCH_PROVIDERS__ORDER": '["fal"]',
            "RETOUCH_PROVIDERS__FAL__API_KEY": fal.api_key,
            "RETOUCH_PROVIDERS__FAL__BASE_URL": fal.base_url,
        },
    )
    bot = InProcessBot(discord_fake, settings_for(env, monkeypatch))
    await bot.start()
    yield bot
    await bot.stop()


async def test_a_size_the_host_cannot_make_is_refused_before_anything_is_queued(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    image = discord_fake.add_cdn_file(png(), "p.png")
    asked = await discord_fake.slash("edit", prompt="bigger", image=image, resolution="2K")
    assert "cannot make 2K images; pick 1K" in await private_answer(asked)
    await discord_fake.slash("edit", prompt="normal", image=discord_fake.add_cdn_file(png(), "q.png"))
    result = await discord_fake.wait_for_message(has_image)
    assert "Upscale" not in buttons(result)
    assert [run.input["prompt"] for run in runflow.runs.values()] == ["normal"]


async def test_a_4k_edit_is_made_at_4k_and_charged_for_it(
    on_fal: InProcessBot, discord_fake: FakeDiscord, fal: FakeFal
) -> None:
    image = discord_fake.add_cdn_file(png(), "p.png")
    await discord_fake.slash(
        "edit", prompt="poster", image=image, resolution="4K", size="landscape_16_9", quality="high"
    )
    result = await discord_fake.wait_for_message(has_image)
    assert fal.order[0].input["image_size"] == {"width": 3840, "height": 2160}
    attachment = result["attachments"][0]
    assert (attachment["width"], attachment["height"]) == (3840, 2160)
    assert "56 credits" in text(result)  # high is 14 credits at 1K, ×4 at 4K
    assert "Upscale" not in buttons(result)  # nothing larger to make
    prices = await (await discord_fake.slash("credits", subcommand="prices")).wait_response()
    assert "**high**: 14 at 1K, 28 at 2K, 56 at 4K" in prices["data"]["content"]


async def test_upscale_makes_a_larger_copy_of_the_chosen_image(
    on_fal: InProcessBot, discord_fake: FakeDiscord, fal: FakeFal
) -> None:
    image = discord_fake.add_cdn_file(png(), "p.png")
    await discord_fake.slash("edit", prompt="two cats", image=image, count=2, quality="low")
    first = await discord_fake.wait_for_message(has_image)
    assert "Upscale" in buttons(first)
    click = await discord_fake.click(first, "Upscale")
    modal = await click.wait_modal()
    choices = {
        label["label"]: [option["label"] for option in label["component"]["options"]]
        for label in modal["components"]
    }
    assert choices == {"Size": ["2K · 2 credits", "4K · 4 credits"], "Which image": ["Image 1", "Image 2"]}
    await discord_fake.submit_modal(click, {"resolution": ["2K"], "output": ["1"]})
    second = await discord_fake.wait_for_message(lambda m: has_image(m) and m["id"] != first["id"])
    upscale = fal.order[1].input
    assert upscale["prompt"] == UPSCALE_PROMPT and upscale["num_images"] == 1
    assert upscale["image_urls"] == [first["attachments"][1]["url"]]
    # fal's 1K output is 32×24, so the 2K copy keeps 4:3 with a 2048-pixel long edge.
    assert upscale["image_size"] == {"width": 2048, "height": 1536}
    assert "2 credits" in text(second)
    assert "Upscale" in buttons(second)  # 4K is still larger
    info = await (await discord_fake.click(second, "Info")).wait_response()
    assert info["data"]["flags"] & EPHEMERAL
    fields = {field["name"]: field["value"] for field in info["data"]["embeds"][0]["fields"]}
    assert fields["Continues from"] == "#1"
