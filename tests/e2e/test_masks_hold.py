"""Masks that hold on every host: a host that repaints the whole picture, ignoring the mask, still
delivers a result that is the original outside the mask and the host's edit inside it."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image, ImageOps

from bot.pictures.composite import FEATHER
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import has_image
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow

SIZE = (96, 64)
BOX = (24, 16, 72, 48)  # where the mask lets the picture change
MARGIN = int(FEATHER * 4)


def original() -> Image.Image:
    image = Image.new("RGB", SIZE)
    image.putdata(
        [((x * 3) % 256, (y * 4) % 256, (x + y) % 256) for y in range(SIZE[1]) for x in range(SIZE[0])]
    )
    return image


def encoded(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def white_box_mask() -> bytes:
    mask = Image.new("L", SIZE, 0)
    mask.paste(255, BOX)
    return encoded(mask)


def transparent_box_mask() -> bytes:
    mask = Image.new("RGBA", SIZE, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), BOX)
    return encoded(mask)


def regions() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    left, top, right, bottom = BOX
    outside = [
        (x, y)
        for y in range(SIZE[1])
        for x in range(SIZE[0])
        if x < left - MARGIN or x >= right + MARGIN or y < top - MARGIN or y >= bottom + MARGIN
    ]
    inside = [
        (x, y) for y in range(top + MARGIN, bottom - MARGIN) for x in range(left + MARGIN, right - MARGIN)
    ]
    return outside, inside


async def masked_edit(fake: FakeDiscord, mask: bytes, prompt: str) -> dict[str, Any]:
    await fake.slash(
        "edit",
        prompt=prompt,
        image=fake.add_cdn_file(encoded(original()), "photo.png"),
        mask=fake.add_cdn_file(mask, "mask.png"),
    )
    return await fake.wait_for_message(lambda m: has_image(m) and prompt in str(m.get("content")))


@pytest.mark.parametrize(
    "mask", [white_box_mask(), transparent_box_mask()], ids=["white-box", "transparent-box"]
)
async def test_a_host_that_ignores_the_mask_still_leaves_the_outside_untouched(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow, mask: bytes
) -> None:
    assert not runflow.honour_mask  # the fake repaints the whole picture, as a host ignoring masks does
    result = await masked_edit(discord_fake, mask, "only the middle")
    delivered = Image.open(io.BytesIO(discord_fake.file_bytes(result["attachments"][0]))).convert("RGB")
    assert delivered.size == SIZE
    source, repainted = original(), ImageOps.invert(original())
    outside, inside = regions()
    assert all(delivered.getpixel(p) == source.getpixel(p) for p in outside)
    assert all(delivered.getpixel(p) == repainted.getpixel(p) for p in inside)
    info = await (await discord_fake.click(result, "Info")).wait_response()
    mask_field = next(f for f in info["data"]["embeds"][0]["fields"] if f["name"] == "Mask")
    assert "Outside the mask the result is the original" in mask_field["value"]


async def test_both_mask_conventions_give_the_same_result(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    white = await masked_edit(discord_fake, white_box_mask(), "white convention")
    clear = await masked_edit(discord_fake, transparent_box_mask(), "transparent convention")
    first = Image.open(io.BytesIO(discord_fake.file_bytes(white["attachments"][0]))).convert("RGB")
    second = Image.open(io.BytesIO(discord_fake.file_bytes(clear["attachments"][0]))).convert("RGB")
    assert first.tobytes() == second.tobytes()


async def test_retry_of_a_masked_edit_keeps_its_mask(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await masked_edit(discord_fake, white_box_mask(), "again with the mask")
    await discord_fake.click(result, "Retry")
    await runflow.wait_for_run(count=2)
    first, second = (run.input for run in runflow.runs.values())
    assert first.get("mask_url") and second.get("mask_url")
    await discord_fake.wait_for_message(lambda m: has_image(m) and m["id"] != result["id"])
