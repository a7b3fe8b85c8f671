"""The "Edit image" form: its options, its uploads, and continuing from one of the bot's results."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, has_image
from tests.e2e.test_inputs import PUBLIC, mask_png
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_the_form_offers_quality_count_a_mask_and_another_picture(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    picture = discord_fake.add_cdn_file(png(128, 96), "street.png")
    posted = await discord_fake.post_message("before", attachments=[picture])
    menu = await discord_fake.message_command("Edit image", posted)
    modal = await menu.wait_modal()
    labels = [component["label"] for component in modal["components"]]
    assert labels == [
        "What should change?",
        "Quality",
        "How many versions",
        "Mask (optional)",
        "Another reference picture (optional)",
    ]
    mask = discord_fake.add_cdn_file(mask_png(128, 96, white_box=True), "mask.png")
    extra = discord_fake.add_cdn_file(png(64, 64, color=(0, 0, 200)), "style.png")
    await discord_fake.submit_modal(
        menu,
        {
            "prompt": "paint the door",
            "quality": ["low"],
            "count": ["2"],
            "mask": [mask],
            "reference": [extra],
        },
    )
    run = await runflow.wait_for_run()
    assert run.input["quality"] == "low" and run.input["num_images"] == 2
    assert run.input["image_urls"] == [picture["url"], extra["url"]]
    assert "/files/1/mask-ready.png?exp=" in run.input["mask_url"]
    sent_mask = Image.open(retouch.settings.storage.files_dir / "0000" / "1" / "mask-ready.png")
    assert sent_mask.size == (128, 96) and sent_mask.getpixel((0, 0)) == 255
    result = await discord_fake.wait_for_message(has_image)
    assert len(result["attachments"]) == 2


async def test_options_left_empty_take_the_servers_defaults(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    posted = await discord_fake.post_message("x", attachments=[discord_fake.add_cdn_file(png(), "p.png")])
    menu = await discord_fake.message_command("Edit image", posted)
    await discord_fake.submit_modal(menu, {"prompt": "just the prompt"})
    run = await runflow.wait_for_run()
    defaults = retouch.settings.editing
    assert run.input["quality"] == defaults.default_quality and run.input["num_images"] == 1
    assert "mask_url" not in run.input


async def test_a_mask_of_another_shape_is_refused_privately_and_costs_nothing(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    posted = await discord_fake.post_message(
        "x", attachments=[discord_fake.add_cdn_file(png(128, 96), "p.png")]
    )
    menu = await discord_fake.message_command("Edit image", posted)
    tall = discord_fake.add_cdn_file(mask_png(50, 200, white_box=True), "tall.png")
    submitted = await discord_fake.submit_modal(menu, {"prompt": "only here", "mask": [tall]})
    response = await submitted.wait_response()
    assert response["type"] == 4 and response["data"]["flags"] & EPHEMERAL
    assert "mask" in response["data"]["content"].lower()
    assert retouch.bot is not None and await retouch.bot.jobs.get(1) is None
    assert not runflow.runs


async def test_edit_image_on_a_result_continues_its_chain(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    await discord_fake.slash("edit", prompt="first", image=discord_fake.add_cdn_file(png(), "p.png"))
    first = await discord_fake.wait_for_message(has_image)
    menu = await discord_fake.message_command("Edit image", first)
    await discord_fake.submit_modal(menu, {"prompt": "and then"})
    second = await discord_fake.wait_for_message(lambda m: has_image(m) and m["id"] != first["id"])
    run = await runflow.wait_for_run(count=2)
    assert run.input["image_urls"] == [first["attachments"][0]["url"]]
    info = await (await discord_fake.click(second, "Info")).wait_response()
    assert info["data"]["flags"] & EPHEMERAL
    fields = {field["name"]: field["value"] for field in info["data"]["embeds"][0]["fields"]}
    assert fields["Continues from"] == "#1"


async def test_pictures_in_embeds_are_taken_through_discords_media_proxy(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    linked = discord_fake.add_embed_image(png(), "sunset.png")
    posted = await discord_fake.post_message("https://example.invalid/sunset.png", embeds=[linked])
    menu = await discord_fake.message_command("Edit image", posted)
    await discord_fake.submit_modal(menu, {"prompt": "warmer"})
    run = await runflow.wait_for_run()
    assert run.input["image_urls"] == [linked["thumbnail"]["proxy_url"]]
    await discord_fake.wait_for_message(has_image)
