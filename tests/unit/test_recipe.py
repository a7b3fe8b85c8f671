"""The recipe is spliced into result files without touching their pixels or the host's own tags."""

from __future__ import annotations

import io
import json

import pytest
from PIL import ExifTags, Image

from bot.jobs.recipe import Recipe, stamp

RECIPE = Recipe('make it ☃ "blue"', 7, 3, "high", "auto", "1K", "runflow")


def encoded(image_format: str, mode: str = "RGB", **params: object) -> bytes:
    buffer = io.BytesIO()
    colour = (10, 200, 30) if mode == "RGB" else (10, 200, 30, 128)
    Image.new(mode, (40, 30), colour).save(buffer, image_format, **params)
    return buffer.getvalue()


def host_exif() -> bytes:
    tags = Image.Exif()
    tags[ExifTags.Base.Make] = "SomeHost"
    return tags.tobytes()


CASES = {
    "png": encoded("PNG"),
    "png_alpha": encoded("PNG", "RGBA"),
    "jpeg": encoded("JPEG"),
    "jpeg_with_host_exif": encoded("JPEG", exif=host_exif()),
    "webp_lossy": encoded("WEBP"),
    "webp_lossless_alpha": encoded("WEBP", "RGBA", lossless=True),
    "webp_lossy_alpha": encoded("WEBP", "RGBA"),
    "webp_with_host_exif": encoded("WEBP", exif=host_exif()),
}


@pytest.mark.parametrize("name", CASES)
def test_a_stamped_file_decodes_to_the_same_pixels_and_reads_back_its_recipe(name: str) -> None:
    data = CASES[name]
    with Image.open(io.BytesIO(data)) as before, Image.open(io.BytesIO(stamp(data, RECIPE))) as after:
        assert after.format == before.format and after.tobytes() == before.tobytes()
        if after.format == "PNG":
            assert after.text["Description"] == RECIPE.prompt  # type: ignore[attr-defined]
            text = after.text["retouch"]  # type: ignore[attr-defined]
        else:
            tags = after.getexif()
            assert tags[ExifTags.Base.ImageDescription] == "Retouch edit #7"
            if name.endswith("host_exif"):
                assert tags[ExifTags.Base.Make] == "SomeHost"
            comment = tags.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment]
            text = comment.removeprefix(b"ASCII\x00\x00\x00").decode()
        assert Recipe(**json.loads(text)) == RECIPE


def test_a_file_of_another_kind_is_left_as_it_is() -> None:
    assert stamp(b"GIF89a...", RECIPE) == b"GIF89a..."
