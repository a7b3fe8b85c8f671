"""Size choices a preset-only host cannot make within gpt-image-2's limits are refused privately."""

from __future__ import annotations

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import has_image, private_answer
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png


async def test_a_preset_under_the_models_minimum_is_refused_before_anything_is_queued(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    """Runflow takes only preset names, and its `square` is 512x512, under 655,360 pixels."""
    image = discord_fake.add_cdn_file(png(), "p.png")
    asked = await discord_fake.slash("edit", prompt="stormy sky", image=image, size="square")
    answer = await private_answer(asked)
    assert "cannot make the “Square” size; pick" in answer and "“Square, high detail”" in answer
    await discord_fake.slash(
        "edit", prompt="calm sky", image=discord_fake.add_cdn_file(png(), "q.png"), size="square_hd"
    )
    await discord_fake.wait_for_message(has_image)
    assert [run.input["image_size"] for run in runflow.runs.values()] == ["square_hd"]


async def test_a_one_character_prompt_is_refused_before_anything_is_queued(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    asked = await discord_fake.slash("edit", prompt="x", image=discord_fake.add_cdn_file(png(), "p.png"))
    assert "prompt is too short" in await private_answer(asked)
    assert not runflow.runs
