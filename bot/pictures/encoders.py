"""The encoders that fit results under the upload limit, and predicting a file's size cheaply.

`images.fit_under` chooses the codec and the order of the tries; this module makes each try
cost as little as it can: a sample of the picture tells whether a quality can fit before the
whole picture is encoded, and a JPEG that grows past the limit is abandoned mid-encode.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from bot.pictures.sizes import MAX_PIXELS as LARGEST_RESULT

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


@dataclass(frozen=True)
class Codec:
    content_type: str
    qualities: tuple[int, ...]
    """Tried in turn on all the pixels; the first whose file fits is kept."""
    shrink_quality: int
    """The quality of a picture that had to lose pixels to fit."""
    max_side: int
    max_pixels: int
    encode: Callable[[Image.Image, int, bytes | None, int | None], bytes | None]
    """The file at a quality, or None once it grows past the cap (when there is one)."""


class _Full(Exception):
    """The encoding grew past the cap it was given."""


class _CappedBuffer(io.BytesIO):
    """A buffer that refuses to grow past `cap` bytes, which stops the encoder writing to it.

    Pillow's JPEG encoder writes as it goes, so a file that will not fit is given up as soon as
    it is too large: neither the time nor the memory of the rest is spent on it.
    """

    def __init__(self, cap: int | None) -> None:
        super().__init__()
        self._cap = cap

    def write(self, data: ReadableBuffer, /) -> int:
        if self._cap is not None and self.tell() + memoryview(data).nbytes > self._cap:
            raise _Full
        return super().write(data)


def _encode_jpeg(image: Image.Image, quality: int, exif: bytes | None, cap: int | None) -> bytes | None:
    buffer = _CappedBuffer(cap)
    extra = {"exif": exif} if exif else {}
    try:
        # Without chroma subsampling: at 4:2:0 colour detail falls below WebP's at quality 92.
        image.save(buffer, "JPEG", quality=quality, subsampling=0, **extra)
    except _Full:
        return None
    return buffer.getvalue()


def _encode_webp(image: Image.Image, quality: int, exif: bytes | None, cap: int | None) -> bytes | None:
    buffer = io.BytesIO()
    mode = "RGBA" if image.mode in ("RGBA", "LA") else "RGB"
    # convert() copies even when the mode is already right.
    extra = {"exif": exif} if exif else {}
    (image if image.mode == mode else image.convert(mode)).save(
        buffer, "WEBP", quality=quality, method=4, **extra
    )
    encoded = buffer.getvalue()
    return None if cap is not None and len(encoded) > cap else encoded


WEBP_MAX_SIDE = 16383
JPEG_MAX_SIDE = 65_500
# JPEG at quality 96 without chroma subsampling was at least as close to the source (PSNR) as
# WebP at quality 92 on every kind of picture measured, smooth, grainy or with colour noise
# (tests/unit/test_fitting.py, bench/fit.py), and encodes about ten times faster. Its encoder
# holds little beside the picture, so it takes every pixel it is given; libwebp's takes about
# 30 bytes a pixel, so WebP gets no more pixels than any host makes.
JPEG = Codec("image/jpeg", (96, 93, 90, 87, 84), 90, JPEG_MAX_SIDE, JPEG_MAX_SIDE**2, _encode_jpeg)
WEBP = Codec("image/webp", (92, 85, 75), 85, WEBP_MAX_SIDE, LARGEST_RESULT, _encode_webp)

# Discord's upload limit is at least 10 MiB. Under this one, JPEG's fixed few hundred bytes of
# tables start to count, and a 1×1 JPEG (634 bytes in colour) misses a limit that WebP's
# 64 bytes meet, so the smallest limits are met with WebP.
JPEG_LEAST_LIMIT = 64 * 1024

# The size is predicted from bands of this many rows (a whole number of JPEG's blocks and
# WebP's macroblocks), one in `_SAMPLED`, spread over the picture; a picture of at most
# `_SMALL` pixels is encoded whole instead.
_BAND = 16
_SAMPLED = 8
_SMALL = 1 << 18
# Pixels of the picture resampled at a time by `resized`.
RESIZE_BAND_PIXELS = 1 << 19


def attempt(
    image: Image.Image, codec: Codec, quality: int, exif: bytes | None, limit: int
) -> tuple[float, bytes | None]:
    """The file's size at `quality` (predicted, or known), and the file itself when it fits."""
    bands = image.height // _BAND
    if image.width * image.height <= _SMALL or bands < 2 * _SAMPLED:
        encoded = codec.encode(image, quality, exif, None)
        assert encoded is not None
        return len(encoded), encoded if len(encoded) <= limit else None
    tops = range(_BAND * (_SAMPLED // 2), bands * _BAND, _BAND * _SAMPLED)
    with Image.new(image.mode, (image.width, len(tops) * _BAND)) as sample:
        for row, top in enumerate(tops):
            sample.paste(image.crop((0, top, image.width, top + _BAND)), (0, row * _BAND))
        sampled = codec.encode(sample, quality, None, None)
    assert sampled is not None
    estimate = len(sampled) * image.height / (len(tops) * _BAND) + len(exif or b"")
    if estimate > limit:
        return estimate, None
    # A sample can misjudge; the cap then stops the encoding as soon as it cannot fit.
    encoded = codec.encode(image, quality, exif, limit)
    return (estimate if encoded is None else len(encoded)), encoded


def resized(image: Image.Image, scale: float) -> Image.Image:
    """The picture `scale` times the size (at least 1×1), made a band of rows at a time.

    Pillow's resize holds a first pass as large as the picture's height at the new width, so
    resizing whole to 0.95 held 2.85 pictures; in bands it holds the result beside the picture.
    Each band is resampled from the whole picture, so the bands meet without a seam (within a
    level of rounding).
    """
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    out = Image.new(image.mode, size)
    step = image.height / size[1]
    rows = max(1, int(RESIZE_BAND_PIXELS / (image.width * step)))
    for top in range(0, size[1], rows):
        bottom = min(top + rows, size[1])
        # Reduced by a whole factor first (Image.reduce, a box filter) where the scale allows it,
        # which Pillow documents as indistinguishable from Lanczos all the way at a gap of 3.
        band = image.resize(
            (size[0], bottom - top),
            Image.Resampling.LANCZOS,
            box=(0, top * step, image.width, bottom * step),
            reducing_gap=3.0,
        )
        out.paste(band, (0, top))
    return out
