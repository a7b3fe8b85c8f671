"""The payload shapes several hosts share, and their readers.

Several hosts serve the same model: each::labs takes and returns fal's shapes, and fal and
each::labs pass OpenAI's `usage` block through. These live here, beside nothing but the host
contract and settings, so no host module imports another and each can change on its own.
"""

from __future__ import annotations

from typing import Any

from bot.providers.base import OutputImage
from bot.providers.settings import TokenPrices

# ASSUMPTION: the mask field of `openai/gpt-image-2/edit`. providers.md found `mask_image_url` in
# community code for fal's older GPT image endpoints; Runflow's proxy of this very model and
# another host serving it through fal both document `mask_url`, as does design.md, so that wins.
MASK_FIELD = "mask_url"
# OpenAI's published gpt-image-2 prices (the config's defaults), for hosts that pass OpenAI's
# `usage` block through without prices of their own.
OPENAI_PRICES = TokenPrices()


def _count(value: Any) -> int:
    """A token count, or 0 for anything that cannot be one (a bigger count would be a lie)."""
    plausible = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**12
    return value if plausible else 0


def token_usd_micros(usage: Any, prices: TokenPrices) -> int | None:
    """What a GPT image `usage` block costs; None when the reply carries no token counts.

    Input tokens without a text/image split are priced as image tokens and output tokens
    without one as image output, since image tokens dominate an edit and over-counting is the
    safe side for the owner's budget cap.
    """
    if not isinstance(usage, dict):
        return None
    details_in = usage.get("input_tokens_details")
    details_out = usage.get("output_tokens_details")
    if isinstance(details_in, dict):
        text_in, image_in = _count(details_in.get("text_tokens")), _count(details_in.get("image_tokens"))
    else:
        text_in, image_in = 0, _count(usage.get("input_tokens"))
    if isinstance(details_out, dict):
        text_out, image_out = _count(details_out.get("text_tokens")), _count(details_out.get("image_tokens"))
    else:
        text_out, image_out = 0, _count(usage.get("output_tokens"))
    if not (text_in or image_in or text_out or image_out):
        return None
    return round(
        text_in * prices.text_in
        + image_in * prices.image_in
        + text_out * prices.text_out
        + image_out * prices.image_out
    )


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def output_images(payload: Any) -> list[OutputImage]:
    """The `images[]` of a fal-style model output (each::labs serves the same shape)."""
    entries = payload.get("images") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        return []
    return [
        OutputImage(
            url=entry["url"],
            content_type=entry.get("content_type") if isinstance(entry.get("content_type"), str) else None,
            width=int_or_none(entry.get("width")),
            height=int_or_none(entry.get("height")),
        )
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("url"), str) and entry["url"]
    ]


def nsfw_flag(payload: dict[str, Any]) -> bool:
    """fal models report NSFW as `has_nsfw_concepts` (one bool per image) or a single flag."""
    for key in ("has_nsfw_concepts", "nsfw_content_detected", "nsfw_detected", "nsfw"):
        value = payload.get(key)
        if isinstance(value, list):
            return any(item is True for item in value)
        if isinstance(value, bool):
            return value
    return False
