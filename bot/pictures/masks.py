"""Masks: where an edit may change the picture, read in either convention members draw them.

Members bring black-and-white masks (white = may change, what the URL hosts' `mask_url`
expects) and PNGs with transparency (transparent = may change, what OpenAI expects). This is the
one place that reads either and writes what a host wants, so no provider keeps mask logic of
its own. CPU-bound and synchronous: callers run it in a worker thread.
"""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageOps, UnidentifiedImageError

from bot.pictures.images import MAX_PIXELS, WEBP_MAX_PIXELS, ImageProblem, upright_8bit
from bot.pictures.validation import AttachmentFacts, attachment_problem

NOTHING_TO_CHANGE = "The mask marks nothing to change; paint the area to edit white (or transparent)."
EVERYTHING_CHANGES = (
    "The mask lets the whole image change; edit without a mask, or paint the parts to keep black."
)
UNREADABLE = "The mask is not a readable PNG, JPEG, WebP or GIF image; attach it again as a PNG."
# Only these decoders ever see a mask: each extra format Pillow tries is more code facing the file.
_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# How far the mask's shape may differ from the image's before stretching it would move the edit:
# room for rounding when either was scaled, far less than any real change of crop.
_SHAPE_TOLERANCE = 0.02
_HALF = 128


def mask_problem(mask: AttachmentFacts, image: AttachmentFacts) -> str | None:
    """The cheap check on what Discord says about the mask and the first image, before downloading.

    Discord's sizes may or may not have EXIF orientation applied, so a mask turned a quarter
    relative to the image passes here; `to_alpha_mask` and `to_bw_mask` check the real shapes.
    """
    problem = attachment_problem(mask)
    if problem is not None or not (mask.width and mask.height and image.width and image.height):
        return problem
    shape = (mask.width, mask.height)
    if _same_shape(shape, (image.width, image.height)) or _same_shape(shape, (image.height, image.width)):
        return None
    return _shape_message(shape, (image.width, image.height))


def to_alpha_mask(mask: bytes, size: tuple[int, int]) -> bytes:
    """OpenAI's mask: an RGBA PNG of `size`, fully transparent where the edit may change pixels."""
    editable = _editable(mask, size)
    black = Image.new("L", size, 0)
    out = Image.merge("RGBA", (black, black, black, ImageOps.invert(editable)))
    return _png(out)


def to_bw_mask(mask: bytes, size: tuple[int, int]) -> bytes:
    """The URL hosts' mask: a greyscale PNG of `size`, white where the edit may change pixels."""
    return _png(_editable(mask, size))


def _editable(mask: bytes, size: tuple[int, int]) -> Image.Image:
    """255 where the edit may change pixels and 0 elsewhere, at `size`, the first image's size.

    A mask with transparency that is not fully opaque is read as alpha (transparent = may
    change); anything else as luminance, white at 50% or more meaning may change. Resizing is
    nearest-neighbour so edges stay hard, and the emptiness checks run on the resized mask because
    that is what the host gets.
    """
    width, height = size
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise ValueError(f"a mask cannot be made for a {width}×{height} image")
    if not mask:
        raise ImageProblem("The mask file is empty; attach it again.")
    try:
        with Image.open(io.BytesIO(mask), formats=_FORMATS) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise ImageProblem(
                    f"The mask is {opened.width}×{opened.height} pixels; "
                    "attach one the same size as the image."
                )
            if opened.format == "WEBP" and opened.width * opened.height > WEBP_MAX_PIXELS:
                raise ImageProblem("The mask is too large a WebP to open; attach it as a PNG.")
            editable = _painted(upright_8bit(opened))
    except ImageProblem:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageProblem(
            "The mask is too large to open safely; attach one the same size as the image."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        # ValueError and struct.error: Pillow's answer to some malformed chunks and EXIF blocks.
        raise ImageProblem(UNREADABLE) from exc
    if not _same_shape(editable.size, size):
        raise ImageProblem(_shape_message(editable.size, size))
    if editable.size != size:
        editable = editable.resize(size, Image.Resampling.NEAREST)
    # The mask is all 0 or 255 by now, so its extremes say whether it marks nothing or everything
    # without another copy of it.
    low, high = editable.getextrema()
    if high == 0:
        raise ImageProblem(NOTHING_TO_CHANGE)
    if low == 255:
        raise ImageProblem(EVERYTHING_CHANGES)
    return editable


def _painted(pixels: Image.Image) -> Image.Image:
    """255 where the member painted "may change", 0 elsewhere, at the mask's own size."""
    if "A" in pixels.getbands():
        transparent = pixels.getchannel("A").point(lambda value: 255 if value < _HALF else 0)
        if transparent.getbbox() is not None:
            return transparent
    grey = pixels if pixels.mode == "L" else pixels.convert("L")
    return grey.point(lambda value: 255 if value >= _HALF else 0)


def _same_shape(mask: tuple[int, int], image: tuple[int, int]) -> bool:
    """Within the tolerance, or within a pixel of rounding, which matters for small masks."""
    (mask_width, mask_height), (image_width, image_height) = mask, image
    # The mask's height against the image's scaled to the mask's width, times image_width.
    error = abs(mask_height * image_width - mask_width * image_height)
    return error <= max(image_width, image_height, _SHAPE_TOLERANCE * mask_width * image_height)


def _shape_message(mask: tuple[int, int], image: tuple[int, int]) -> str:
    return (
        f"The mask is {mask[0]}×{mask[1]} pixels but the image is {image[0]}×{image[1]}; "
        "draw the mask over the same picture so their shapes match."
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
