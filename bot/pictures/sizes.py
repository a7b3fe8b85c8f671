"""Exact output sizes for every size choice and resolution, within GPT Image 2's limits.

GPT Image 2 makes any size whose edges are multiples of 16, with the long edge at most 3840,
the aspect between 1:3 and 3:1, and between 655,360 and 8,294,400 pixels. The hosts' presets
cannot be trusted with that: fal's `square` is 512x512 and its 16:9 presets 1024x576, under the
minimum. So the preset (or, for "auto", the first reference) only chooses the aspect, and the
size is worked out here: at 1K a 1024-pixel long edge (fal's own 1024x768 and 1024x1024 where
those are valid), raised to the smallest valid size where that would have too few pixels.

The arithmetic is exact (fractions and integer square roots): a float that lands a hair under
a multiple of 16 would silently drop a whole row of 16 pixels, or a hair over, break a limit.
"""

from __future__ import annotations

from fractions import Fraction
from math import isqrt

# The size choices and resolutions a member picks from. They live beside the arithmetic, not with
# the hosts, so the hosts depend on the sizes and never the reverse.
IMAGE_SIZES = (
    "auto",
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
)
RESOLUTIONS = ("1K", "2K", "4K")
# How a member reads each size choice, in the command's choices and in a refusal.
SIZE_NAMES = {
    "auto": "Same shape as the image",
    "square_hd": "Square, high detail",
    "square": "Square",
    "portrait_4_3": "Portrait 3:4",
    "portrait_16_9": "Portrait 9:16",
    "landscape_4_3": "Landscape 4:3",
    "landscape_16_9": "Landscape 16:9",
}

EDGE_STEP = 16
MAX_EDGE = 3840
MAX_RATIO = 3
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400
LONG_EDGE = {"1K": 1024, "2K": 2048, "4K": MAX_EDGE}
# Width:height of each preset; "auto" takes the first reference's instead.
PRESET_ASPECTS = {
    "square_hd": Fraction(1),
    "square": Fraction(1),
    "portrait_4_3": Fraction(3, 4),
    "portrait_16_9": Fraction(9, 16),
    "landscape_4_3": Fraction(4, 3),
    "landscape_16_9": Fraction(16, 9),
}


def _aspect(image_size: str, source: tuple[int, int] | None) -> Fraction:
    if image_size in PRESET_ASPECTS:
        return PRESET_ASPECTS[image_size]
    if source is None:
        return Fraction(1)
    width, height = source
    if width <= 0 or height <= 0:
        raise ValueError(f"a source image of {width}x{height} has no aspect")
    return min(max(Fraction(width, height), Fraction(1, MAX_RATIO)), Fraction(MAX_RATIO))


def _edge(square: Fraction) -> int:
    """The square root of `square`, rounded down to a multiple of 16, without floats."""
    root = isqrt(square.numerator * square.denominator) // square.denominator
    return root - root % EDGE_STEP


def _up(value: Fraction) -> int:
    """`value` rounded up to a multiple of 16."""
    whole = -(-value.numerator // value.denominator)
    return -(-whole // EDGE_STEP) * EDGE_STEP


def _smallest(stretch: Fraction) -> tuple[int, int]:
    """(long, short) of the fewest pixels at least MIN_PIXELS in this aspect.

    The short edge is the least multiple of 16 whose square is at least MIN_PIXELS / stretch,
    and the long edge the least multiple of 16 at least short × stretch: never past 3:1,
    since 3 × a multiple of 16 is one, and about 1400 pixels at most, far under the limits.
    """
    least = MIN_PIXELS / stretch
    needed = -(-least.numerator // least.denominator)  # s² ≥ least ⟺ s² ≥ ⌈least⌉ for integer s
    root = isqrt(needed)
    short = _up(Fraction(root if root * root == needed else root + 1))
    return _up(short * stretch), short


def dimensions(image_size: str, resolution: str, source: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) to ask the model for.

    `source` is the first reference's upright size, used only when `image_size` is "auto"
    (without one, "auto" is square). Raises ValueError for a size or resolution the bot does
    not know, so a bad option fails the job rather than reaching the host.
    """
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"unknown image size {image_size!r}")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}")
    aspect = _aspect(image_size, source)
    stretch = max(aspect, 1 / aspect)  # long edge over short edge, at least 1
    target = LONG_EDGE[resolution]
    # The long edge's square: the target, or less where the pixel cap bites (long² / stretch
    # pixels); the short edge follows from it before either is rounded.
    long_square = min(Fraction(target * target), MAX_PIXELS * stretch)
    long_edge = _edge(long_square)
    short_edge = _edge(long_square / (stretch * stretch))
    # Rounding the short edge down can push a 3:1 aspect just past 3:1; 3 × a multiple of 16
    # is still one.
    long_edge = min(long_edge, MAX_RATIO * short_edge)
    if long_edge * short_edge < MIN_PIXELS:
        long_edge, short_edge = _smallest(stretch)
    return (long_edge, short_edge) if aspect >= 1 else (short_edge, long_edge)
