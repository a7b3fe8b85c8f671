"""The recipe is spliced into result files without touching their pixels or the host's own tags."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from bot.jobs.recipe import Recipe, stamp, stamp_end, stamp_whole

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


@pytest.mark.parametrize("name", CASES)
def test_a_png_is_stamped_at_its_end_as_stamp_would_and_anything_else_is_left_for_stamp(
    name: str, tmp_path: Path
) -> None:
    data = CASES[name]
    path = tmp_path / "result"
    path.write_bytes(data)
    with path.open("r+b") as handle:
        done = stamp_end(handle, RECIPE)
    assert done == name.startswith("png")
    assert path.read_bytes() == (stamp(data, RECIPE) if done else data)


def test_a_png_with_bytes_after_its_end_is_left_for_stamp(tmp_path: Path) -> None:
    path = tmp_path / "result"
    path.write_bytes(CASES["png"] + b"trailer")
    with path.open("r+b") as handle:
        assert not stamp_end(handle, RECIPE)
    assert path.read_bytes() == CASES["png"] + b"trailer"


@pytest.mark.parametrize("name", CASES)
def test_a_file_stamped_whole_in_place_is_what_stamp_makes(name: str, tmp_path: Path) -> None:
    path = tmp_path / "result"
    path.write_bytes(CASES[name])
    with path.open("r+b") as handle:
        stamp_whole(handle, RECIPE)
    assert path.read_bytes() == stamp(CASES[name], RECIPE)
