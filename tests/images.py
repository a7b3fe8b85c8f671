"""Small images made on the fly, so no test depends on binary files of unknown origin."""

from __future__ import annotations

import io
import math

from PIL import Image, ImageChops, ImageStat


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def noisy_png(width: int, height: int, seed: int = 1) -> bytes:
    """A PNG that compresses badly, for exercising the upload-size fitting."""
    import random

    rng = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def psnr(image: Image.Image, source: Image.Image) -> float:
    """How close a picture is to its source, in dB (higher is closer; identical is infinite).

    The peak signal-to-noise ratio over the RGB values, computed with Pillow alone (numpy is no
    dependency): a lossy encoding is judged against the pixels it was made from.
    """
    difference = ImageChops.difference(image.convert("RGB"), source.convert("RGB"))
    squares = sum(ImageStat.Stat(difference).sum2)
    mse = squares / (3 * source.width * source.height)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
