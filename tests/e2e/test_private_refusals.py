"""Refusals found after the acknowledgement reach only the member: the channel sees results only.

Some problems show only once the job runs (a file Discord took for an image but nobody can
decode, a reference gone from the CDN, a mask that marks nothing); the public "thinking"
message is withdrawn and the member told in a private followup.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from PIL import Image

from tests.data.make_corpus import corpus
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, text
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png

# The corpus's files that pass Discord's own look (it reads a size) but not the bot's decoding.
LATE_REFUSALS = ("png_truncated", "jpeg_truncated", "tiff_as_png", "tga_as_png", "gif_zero_width_frame")


def black_mask(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 0).save(buffer, "PNG")
    return buffer.getvalue()


def refusal_of(prompt: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: "❌" in text(message) and prompt in text(message)


def public_refusals(fake: FakeDiscord) -> list[dict[str, Any]]:
    """Every non-private message, current or deleted, that ever showed a refusal."""
    seen = [*fake.messages.values(), *fake.deleted_messages.values()]
    return [m for m in seen if not m.get("flags", 0) & EPHEMERAL and "❌" in text(m)]


async def test_refusals_found_after_the_acknowledgement_are_private_and_withdraw_the_status(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    cases = {case.name: case for case in corpus()}
    asks: list[dict[str, Any]] = []
    for name in LATE_REFUSALS:
        case = cases[name]
        asks.append({"image": discord_fake.add_cdn_file(case.data, case.filename, case.content_type)})
    vanished = discord_fake.add_cdn_file(png(64, 48), "gone.png")
    discord_fake.remove_cdn_file(vanished)
    asks.append({"image": vanished})
    asks.append(
        {
            "image": discord_fake.add_cdn_file(png(64, 48), "p.png"),
            "mask": discord_fake.add_cdn_file(black_mask((64, 48)), "mask.png"),
        }
    )
    assert retouch.bot is not None
    for job_id, ask in enumerate(asks, start=1):
        prompt = f"refusal {job_id}"
        interaction = await discord_fake.slash("edit", prompt=prompt, **ask)
        told = await discord_fake.wait_for_message(refusal_of(prompt))
        job = await retouch.bot.jobs.wait_settled(job_id)
        assert job.state.value == "failed" and job.credits_charged == 0
        if told["flags"] & EPHEMERAL:
            assert interaction.original_id in discord_fake.deleted_messages, "the public status stays"
    assert runflow.runs == {}
    public = public_refusals(discord_fake)
    assert not public, f"{len(public)} of {len(asks)} refusals public: {[text(m) for m in public]}"
