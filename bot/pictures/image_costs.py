"""What each piece of Pillow work will hold at its worst, priced from the file's header alone.

Each function takes the same arguments as the work it prices (`inspect_cost` for
`images.inspect`, and so on), so `MemoryBudget.run(estimate, work, *args)` can pair them.
Costs are pixels × bytes per pixel at the most expensive step of the work (decoding,
converting, turning, encoding), never a count of files: an 86 KiB PNG can be 40 megapixels.

The factors were measured, not guessed: each work on 40 MP pictures of every layout the
decoders produce, one fresh process per case, peak RSS (VmHWM) above the RSS before the call.
In bytes per pixel:

    layout        inspect  normalize  mask   what dominates
    1 (PNG)        1.05     2.06      2.01   bilevel → L
    L (PNG, JPEG)  1.03     1.02      2.00   the mask's threshold copy
    I;16 (PNG)     2.02     3.34      3.31   scaled to L in bands (was 12.0 at once)
    P (PNG)        1.03     5.03      6.00   palette → RGB(A)
    P (GIF)        1.22     5.22      6.20   the GIF decoder keeps 0.2 B/px more
    LA, RGB, RGBA  4.02     4.03      6.00   (PNG, JPEG)
    CMYK (JPEG)    4.06     8.06      8.06   CMYK → RGB (was 12.06 with the EXIF copy)
    RGB(A) (WebP) 16.15    16.16     16.04   libwebp's canvases while decoding

Turning by EXIF adds a second copy of the converted picture (8 B/px for RGB). Fitting a result
with transparency into the upload limit measured up to 48 B/px for grey with alpha at 4K
(libwebp's encoder; 51 B/px of the 4K picture when a 40 MP RGBA one is shrunk first), hence the
cap on the pixels WebP encodes; 431 MB for a result with alpha is the most any one step can take.
One without transparency becomes a JPEG, whose encoder holds little beside the picture and whose
file stops at the limit: 5.1 B/px for a 4K photo (the picture and the file), 7.9 B/px for noise
that had to shrink, 6.4 B/px for a 36 MP one.
Re-encoding a member's file gave at most 1.7 times its size (a 23 MiB noisy CMYK JPEG became 38 MiB), allowed here as 3 times.
"""

from __future__ import annotations

from pathlib import Path

from bot.pictures.encoders import JPEG_LEAST_LIMIT, RESIZE_BAND_PIXELS
from bot.pictures.images import Header, header
from bot.pictures.sizes import MAX_PIXELS as LARGEST_RESULT

# Bytes a pixel Pillow stores per layout; every layout of two or more bands takes 4.
_STORED = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
# What a decoder holds beyond the picture: GIF's throughout, WebP's while decoding.
_HELD = {"GIF": 0.25}
_DECODING = {"WEBP": 12.25}
# `images._scaled_to_8bit` works in bands of a million pixels at 4 + 4 + 1 bytes each.
_BANDS = 16_000_000
_READY = frozenset({"RGB", "RGBA", "L", "LA"})
# libwebp's encoder at quality 92, method 4, beyond the picture it is given: up to 25 B/px for
# noisy RGB, 38.6 with alpha (lossless-compressed by libwebp; method 0 still took 30).
_WEBP_ENCODER = 29
# Pictures held while a result is shrunk to fit as a JPEG: the picture and the smaller one, at
# most 1 + 0.95² (each try shrinks each side to 0.95 or less; `encoders.resized` works in
# bands); re-encoding without shrinking holds 1.1 (the picture and a sample of an eighth).
_SHRINKING = 2
_WEBP_ENCODER_ALPHA = 42
_OPAQUE = frozenset({"1", "L", "RGB", "CMYK", "YCbCr", "I;16", "I;16B", "I;16L", "I"})
# A re-encoded file is at most this many times the size of the one it came from.
_REENCODED = 3
# Beside the pixels: codec state, Python objects, Pillow's bookkeeping (measured 1-3 MB).
_OVERHEAD = 8_000_000
# The mask made for OpenAI: the mask, black, its inverse, the RGBA merge of them, and its PNG.
_ALPHA_MASK = 8
# `composite.composite`, measured at 3840×2160 RGB over a 1920×1080 original: 25.5 bytes a pixel
# of peak RSS above the process's start; RGBA adds a byte to each of its three colour copies.
_COMPOSITE = 36


def _stored(mode: str) -> int:
    return _STORED.get(mode, 4)


def _converted(mode: str) -> int:
    """Bytes a pixel after `images.as_8bit`: grey stays one byte, everything else takes four."""
    return 1 if mode in ("1", "L") or mode.startswith("I") else 4


def _upright(head: Header) -> tuple[float, int]:
    """The peak of decoding, converting and turning (`images.upright_8bit`), and the pixels."""
    info = head.info
    pixels = info.width * info.height
    stored, converted = _stored(head.mode), _converted(head.mode)
    held = _HELD.get(head.format, 0)
    steps = [(stored + held + _DECODING.get(head.format, 0)) * pixels]
    if head.mode not in _READY:
        bands = _BANDS if head.mode.startswith("I") else 0
        steps.append((stored + converted + held) * pixels + bands)
    if head.may_turn:
        steps.append((2 * converted + held) * pixels)
    return max(steps), pixels


def inspect_cost(data: bytes | Path) -> int:
    head = header(data)
    pixels = head.info.width * head.info.height
    extra = _HELD.get(head.format, 0) + _DECODING.get(head.format, 0)
    return round((_stored(head.mode) + extra) * pixels) + _OVERHEAD


def normalize_cost(data: bytes) -> int:
    head = header(data)
    peak, pixels = _upright(head)
    converted = _converted(head.mode) * pixels
    encoding = converted + min(converted, _REENCODED * len(data))
    return round(max(peak, encoding)) + _OVERHEAD


def fit_cost(data: bytes | Path, limit: int, *, exif: bytes | None = None) -> int:
    # The recipe's few hundred bytes of EXIF are nothing beside the pixels.
    del exif
    head = header(data)
    peak, pixels = _upright(head)
    converted = _converted(head.mode)
    if head.mode in _OPAQUE and limit >= JPEG_LEAST_LIMIT:
        # JPEG: at most the picture beside a smaller copy of it (see _SHRINKING), and the file,
        # which stops at the limit and is copied once out of its buffer.
        # A band being resized holds at most three copies of its pixels (reduced, first pass, result).
        shrinking = converted * (_SHRINKING * pixels + 3 * RESIZE_BAND_PIXELS) + 2 * limit
        return round(max(peak, shrinking)) + _OVERHEAD
    encoded = min(pixels, LARGEST_RESULT)
    shrinking = converted * (pixels + encoded) if pixels > encoded else 0
    # The encoder gets an RGB(A) copy of a grey picture, and the last try's bytes are still held.
    encoder = _WEBP_ENCODER if head.mode in _OPAQUE else _WEBP_ENCODER_ALPHA
    encoding = (converted + 4 + encoder + 1) * encoded
    return round(max(peak, shrinking, encoding)) + _OVERHEAD


def fit_file_cost(path: Path, limit: int, *, exif: bytes | None = None) -> int:
    """`images.fit_file`: `fit_under`, and the file's bytes it reads."""
    return fit_cost(path, limit, exif=exif) + path.stat().st_size


def _mask_cost(mask: bytes, size: tuple[int, int], per_target_pixel: int) -> int:
    head = header(mask)
    peak, pixels = _upright(head)
    converted = _converted(head.mode)
    # `masks._painted`: the alpha channel and its threshold, then (when all opaque) grey and its.
    painting = (converted + (4 if converted == 4 else 2)) * pixels
    target = size[0] * size[1]
    return round(max(peak, painting, pixels + target, per_target_pixel * target)) + _OVERHEAD


def bw_mask_cost(mask: bytes, size: tuple[int, int]) -> int:
    return _mask_cost(mask, size, 2)


def alpha_mask_cost(mask: bytes, size: tuple[int, int]) -> int:
    return _mask_cost(mask, size, _ALPHA_MASK)


def masked_pair_cost(first_image: bytes, mask: bytes) -> int:
    """OpenAI's pair: the first image turned upright and re-encoded as PNG, held while its mask
    is made at the same size."""
    return normalize_cost(first_image) + alpha_mask_cost(mask, header(first_image).upright_size)


def composite_cost(original: Path, output: Path, mask: Path) -> int:
    """`composite.composite`: the original, the output and the merged picture in RGB(A) at the
    larger of the two sizes, the mask and its feathered copy, the difference map, and the encode."""
    del mask  # one byte a pixel at the same size: counted in the per-pixel figure
    pixels = max(_pixels(original), _pixels(output))
    return _COMPOSITE * pixels + _OVERHEAD


def _pixels(path: Path) -> int:
    head = header(path)
    return head.info.width * head.info.height
