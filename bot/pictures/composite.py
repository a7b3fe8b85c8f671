"""Keeping a mask's promise: outside the painted region, the result is the original.

No host documents which colour of a mask marks the editable area, a published measurement found
fal's gpt-image-2 ignoring masks, and OpenAI's guide says its masking is prompt-guided and may not
follow the shape. A member who paints a mask expects everything else to stay as it was, so after
the host answers, its output is laid over the original through the mask: outside the region the
pixels are the original's (bit for bit, away from a few feathered pixels at the edge), inside
they are the host's. CPU-bound and synchronous: callers run it in a worker thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageFilter, ImageOps

from bot.pictures.images import as_8bit

# How soft the edge between kept and edited pixels is: a blur of this radius on the hard mask,
# enough that no seam shows, small enough that "outside" stays the original's a few pixels out.
FEATHER = 2.0
# How far the output's shape may differ from the original's and still be laid over it (rounding
# of sizes to multiples of 16 moves the aspect ratio by about 1%).
SHAPE_TOLERANCE = 0.02
# A pixel "changed" when a channel moved by more than this: JPEG and resampling noise stay under it.
CHANGE_THRESHOLD = 24
_SAVE_AS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP"}


@dataclass(frozen=True)
class Composited:
    data: bytes | None
    """The result laid over the original; None when the shapes differ and the host's output stands."""
    changed_outside: float
    """Share of the pixels outside the mask that the host changed (0.0 = it honoured the mask)."""
    size: tuple[int, int]
    """The result's width and height."""


def same_shape(first: tuple[int, int], second: tuple[int, int]) -> bool:
    (first_width, first_height), (second_width, second_height) = first, second
    return abs(first_width * second_height - second_width * first_height) <= SHAPE_TOLERANCE * (
        first_width * second_height
    )


def _upright(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        return as_8bit(ImageOps.exif_transpose(opened))


def changed_outside(original: Image.Image, output: Image.Image, editable: Image.Image) -> float:
    """The share of pixels outside the editable region (255 = editable) that differ noticeably;
    all three at one size."""
    difference = ImageChops.difference(original.convert("RGB"), output.convert("RGB"))
    # The largest channel difference per pixel, then 255 where it is a real change.
    changed = _largest_channel(difference).point(lambda value: 255 if value > CHANGE_THRESHOLD else 0)
    outside = ImageOps.invert(editable)
    kept_area = outside.histogram()[255]
    if kept_area == 0:
        return 0.0
    changed_there = ImageChops.multiply(changed, outside).histogram()[255]
    return changed_there / kept_area


def _largest_channel(image: Image.Image) -> Image.Image:
    red, green, blue = image.split()
    return ImageChops.lighter(ImageChops.lighter(red, green), blue)


def composite(original: Path, output: Path, mask: Path) -> Composited:
    """The host's `output` laid over the `original` through `mask` (a greyscale PNG at the
    original's upright size, white = editable, as the bot prepared it for the hosts).

    When the output is larger (a 2K or 4K edit), the original and the mask are scaled up to it, so
    the member keeps the resolution they paid for; otherwise the output is scaled to the original.
    """
    with Image.open(output) as opened:
        fmt = _SAVE_AS.get(opened.format or "", "PNG")
        result = as_8bit(opened)
        result.load()
    base = _upright(original)
    with Image.open(mask) as opened_mask:
        editable = opened_mask.convert("L")
    if not same_shape(base.size, result.size):
        return Composited(None, 0.0, result.size)
    size = result.size if result.width * result.height > base.width * base.height else base.size
    if base.size != size:
        base = base.resize(size, Image.Resampling.LANCZOS)
    if result.size != size:
        result = result.resize(size, Image.Resampling.LANCZOS)
    if editable.size != size:
        editable = editable.resize(size, Image.Resampling.NEAREST)
    mode = "RGBA" if "A" in base.getbands() or "A" in result.getbands() else "RGB"
    base, result = base.convert(mode), result.convert(mode)
    share = changed_outside(base, result, editable)
    feathered = editable.filter(ImageFilter.GaussianBlur(FEATHER))
    merged = Image.composite(result, base, feathered)
    buffer = io.BytesIO()
    if fmt == "JPEG":
        merged.convert("RGB").save(buffer, "JPEG", quality=95)
    elif fmt == "WEBP":
        merged.save(buffer, "WEBP", quality=92)
    else:
        merged.save(buffer, "PNG")
    return Composited(buffer.getvalue(), share, size)
