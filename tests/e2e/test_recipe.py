"""The recipe travels with the file: what a member downloads says how it was made."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import ExifTags, Image

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import has_image
from tests.e2e.test_admin import reply
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import noisy_png, png


def recipe_in(fake: FakeDiscord, message: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe in the delivered attachment's bytes, read back as any image tool would."""
    image = Image.open(io.BytesIO(fake.file_bytes(message["attachments"][0])))
    image.load()
    if image.format == "PNG":
        text = image.text.get("retouch")  # type: ignore[attr-defined]
        return json.loads(text) if text else None
    comment = image.getexif().get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.UserComment)
    if comment is None:
        return None
    assert isinstance(comment, bytes) and comment.startswith(b"ASCII\x00\x00\x00")
    return dict(json.loads(comment[8:]))


async def result_of(fake: FakeDiscord, seen: set[str]) -> dict[str, Any]:
    found = await fake.wait_for_message(lambda m: has_image(m) and m["id"] not in seen)
    seen.add(found["id"])
    return found


async def test_every_result_file_carries_its_recipe_through_png_jpeg_webp_and_refits(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    seen: set[str] = set()
    image = discord_fake.add_cdn_file(png(64, 48), "p.png")
    await discord_fake.slash("edit", prompt="paint it ☃ blue", image=image, quality="low")
    first = await result_of(discord_fake, seen)
    recipe = recipe_in(discord_fake, first)
    assert recipe == {
        "prompt": "paint it ☃ blue",
        "edit": 1,
        "continues": None,
        "quality": "low",
        "size": "auto",
        "resolution": "1K",
        "host": "runflow",
    }
    click = await discord_fake.click(first, "Refine")
    await click.wait_modal()
    await discord_fake.submit_modal(click, {"prompt": "now red"})
    refined = recipe_in(discord_fake, await result_of(discord_fake, seen))
    assert refined is not None and refined["edit"] == 2 and refined["continues"] == 1
    for number, kind in ((3, "jpeg"), (4, "webp")):
        await discord_fake.slash("edit", prompt=f"as {kind}", image=image, format=kind)
        stamped = recipe_in(discord_fake, await result_of(discord_fake, seen))
        assert stamped is not None and stamped["edit"] == number and stamped["prompt"] == f"as {kind}"
    # A result over the upload limit is re-encoded to fit; the recipe survives, within the limit.
    discord_fake.upload_limit = 6_000
    big = discord_fake.add_cdn_file(noisy_png(96, 96), "noise.png")
    await discord_fake.slash("edit", prompt="shrink me", image=big)
    fitted = await result_of(discord_fake, seen)
    assert fitted["attachments"][0]["filename"].endswith(".webp")
    assert fitted["attachments"][0]["size"] <= 6_000
    shrunk = recipe_in(discord_fake, fitted)
    assert shrunk is not None and shrunk["prompt"] == "shrink me"


async def test_a_server_can_turn_the_recipe_off(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    saved = await reply(
        discord_fake, "retouch", subcommand="settings", user=discord_fake.owner_id, recipe=False
    )
    assert "Recipe in result files: off" in saved
    await discord_fake.slash("edit", prompt="no trace", image=discord_fake.add_cdn_file(png(64, 48), "p.png"))
    result = await discord_fake.wait_for_message(has_image)
    assert recipe_in(discord_fake, result) is None
