"""Inputs as Discord hands them over: signed URLs that expire, files a host could misread, and
URLs that are not Discord's at all."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.pictures import images
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import has_image, shows
from tests.e2e.test_hosts import free_port
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png
from tests.sql import run_sql

PORT = free_port()
PUBLIC = {"RETOUCH_WEB__PORT": str(PORT), "RETOUCH_WEB__PUBLIC_URL": f"http://127.0.0.1:{PORT}"}


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (48, 32), (0, 200, 200, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


async def first_result(fake: FakeDiscord, data: bytes, filename: str, prompt: str = "xy") -> dict[str, Any]:
    await fake.slash("edit", prompt=prompt, image=fake.add_cdn_file(data, filename))
    return await fake.wait_for_message(has_image)


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_retry_after_the_discord_url_expired_uses_a_signed_link_to_the_kept_file(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await first_result(discord_fake, png(), "p.png")
    assert retouch.bot is not None
    job = await retouch.bot.jobs.wait_settled(1)
    stale = [{**item, "url": item["url"].replace("ex=", "ex=00000001&old=")} for item in job.inputs]
    await run_sql(retouch.bot.db, "UPDATE jobs SET inputs = ? WHERE id = ?", (json.dumps(stale), job.id))
    await discord_fake.click(result, "Retry")
    second = await runflow.wait_for_run(count=2)
    # The retry reuses the first edit's kept file, linked from its folder.
    assert second.input["image_urls"][0].startswith(f"http://127.0.0.1:{PORT}/files/1/input-0.png?exp=")
    await discord_fake.wait_for_message(lambda m: has_image(m) and m["id"] != result["id"])


async def test_a_plain_photo_and_its_result_go_through_without_a_decode(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[object] = []
    decode = images._decoded

    def counted(data: bytes | Path) -> tuple[Image.Image, images.ImageInfo]:
        decoded.append(data)
        return decode(data)

    monkeypatch.setattr(images, "_decoded", counted)
    await first_result(discord_fake, png(), "p.png")
    run = await runflow.wait_for_run()
    assert "/attachments/" in run.input["image_urls"][0]  # the Discord URL: sent as it is
    assert decoded == []


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_a_cmyk_photo_is_converted_before_the_host_sees_it(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    await first_result(discord_fake, cmyk_jpeg(), "print.jpg")
    run = await runflow.wait_for_run()
    assert "/files/1/input-0-ready.jpg" in run.input["image_urls"][0]


@pytest.mark.parametrize("overrides", [{"RETOUCH_DISCORD__CDN_HOSTS": '["cdn.discordapp.com"]'}])
async def test_images_from_anywhere_but_discords_cdn_are_not_fetched(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    await discord_fake.slash("edit", prompt="xy", image=discord_fake.add_cdn_file(png(), "p.png"))
    failed = await discord_fake.wait_for_message(shows("❌"))
    assert "not on Discord's CDN" in failed["content"]
    assert runflow.runs == {}
    assert retouch.bot is not None
    job = await retouch.bot.jobs.wait_settled(1)
    assert job.credits_charged == 0
    assert (await retouch.bot.credits.balance(discord_fake.guild_id, discord_fake.member_id)).reserved == 0


def mask_png(width: int, height: int, *, white_box: bool) -> bytes:
    mask = Image.new("L", (width, height), 0)
    if white_box:
        mask.paste(255, (0, 0, width // 2, height // 2))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_a_mask_reaches_the_host_as_black_and_white_at_the_image_size(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    image = discord_fake.add_cdn_file(png(64, 48), "p.png")
    mask = discord_fake.add_cdn_file(mask_png(128, 96, white_box=True), "mask.png")
    await discord_fake.slash("edit", prompt="only the corner", image=image, mask=mask)
    await discord_fake.wait_for_message(has_image)
    run = runflow.runs[next(iter(runflow.runs))]
    assert "/files/1/mask-ready.png?exp=" in run.input["mask_url"]
    assert retouch.bot is not None
    kept = retouch.settings.storage.files_dir / "0000" / "1" / "mask-ready.png"
    sent = Image.open(kept)
    assert sent.size == (64, 48) and sent.getpixel((0, 0)) == 255 and sent.getpixel((63, 47)) == 0


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_an_all_black_mask_is_explained_and_costs_nothing(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    image = discord_fake.add_cdn_file(png(64, 48), "p.png")
    mask = discord_fake.add_cdn_file(mask_png(64, 48, white_box=False), "mask.png")
    await discord_fake.slash("edit", prompt="xy", image=image, mask=mask)
    failed = await discord_fake.wait_for_message(shows("❌"))
    assert "The mask marks nothing to change" in failed["content"]
    assert runflow.runs == {}
    assert retouch.bot is not None
    assert (await retouch.bot.jobs.wait_settled(1)).credits_charged == 0


async def test_a_mask_of_another_shape_is_refused_before_anything_starts(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    image = discord_fake.add_cdn_file(png(64, 48), "p.png")
    mask = discord_fake.add_cdn_file(mask_png(48, 48, white_box=True), "mask.png")
    response = await (await discord_fake.slash("edit", prompt="xy", image=image, mask=mask)).wait_response()
    assert response["type"] == 4 and response["data"]["flags"] & 64
    assert "mask" in response["data"]["content"].lower()
