"""Synthetic test images, made on the fly so the benchmarks depend on no binary files.

"Photo-like" means smooth gradients plus Gaussian grain: flat images compress to almost nothing
and pure noise is a worst case no model produces, while grain of a few levels gives PNG sizes
like real 4K results (σ=1 → ~9.5 MiB, σ=3 → ~15 MiB, σ=4 → ~18 MiB, σ=8 → ~21 MiB at 4096²).
"""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image, ImageChops


def photo(width: int, height: int, grain: float = 4.0) -> Image.Image:
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = red.transpose(Image.Transpose.ROTATE_90).resize((width, height))
    image = Image.merge("RGB", (red, green, blue))
    if grain:
        noise = Image.effect_noise((width, height), grain).convert("RGB")
        image = ImageChops.add(image, noise, scale=1.0, offset=-128)
    return image


@lru_cache(maxsize=8)
def photo_png(width: int, height: int, grain: float = 4.0) -> bytes:
    buffer = io.BytesIO()
    photo(width, height, grain).save(buffer, "PNG")
    return buffer.getvalue()
