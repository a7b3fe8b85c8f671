"""Output sizes above 1K, worked out here because the hosts' presets stop at about 1 megapixel.

GPT Image 2 makes any size whose edges are multiples of 16, with the long edge at most 3840,
the aspect between 1:3 and 3:1, and between 655,360 and 8,294,400 pixels. At 1K the host's
own presets are used unchanged, so edits look exactly as they did before 2K/4K existed; above
that the preset (or, for "auto", the first reference) only chooses the aspect.

The arithmetic is exact (fractions and integer square roots): a float that lands a hair under
a multiple of 16 would silently drop a whole row of 16 pixels, or a hair over, break a limit.
"""

from __future__ import annotations

from fractions import Fraction
from math import isqrt

from bot.providers.base import IMAGE_SIZES, RESOLUTIONS

EDGE_STEP = 16
MAX_EDGE = 3840
MAX_RATIO = 3
MAX_PIXELS = 8_294_400
LONG_EDGE = {"2K": 2048, "4K": MAX_EDGE}
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


def dimensions(image_size: str, resolution: str, source: tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) to ask the model for, or None at 1K, where the host's preset applies.

    `source` is the first reference's upright size, used only when `image_size` is "auto"
    (without one, "auto" is square). Raises ValueError for a size or resolution the bot does
    not know, so a bad option fails the job rather than reaching the host.
    """
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"unknown image size {image_size!r}")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}")
    if resolution == "1K":
        return None
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
    return (long_edge, short_edge) if aspect >= 1 else (short_edge, long_edge)
