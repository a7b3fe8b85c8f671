"""Fitting a result under the upload limit: the codec, the quality it keeps, and how it gets there.

Quality is measured, not assumed: every fitted picture must be at least as close to its source
(PSNR) as WebP at quality 92 of the same pixels, which is what fitting made before JPEG.
"""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
from PIL import ExifTags, Image, ImageChops, ImageStat

from bench.images import photo
from bot.jobs.recipe import Recipe, exif
from bot.pictures import encoders
from bot.pictures.images import fit_under
from tests.images import decode, psnr

LIMIT_FLOOR = encoders.JPEG_LEAST_LIMIT


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def colour_noise(width: int, height: int, sigma: float) -> Image.Image:
    """Grain in each channel on its own: what chroma subsampling loses."""
    noise = Image.merge("RGB", [Image.effect_noise((width, height), sigma) for _ in range(3)])
    return ImageChops.add(photo(width, height, 0), noise, scale=1.0, offset=-128)


PICTURES = {
    "smooth": lambda: photo(1024, 768, 1.0),
    "grain": lambda: photo(1024, 768, 8.0),
    "colour grain": lambda: colour_noise(1024, 768, 8.0),
}


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_an_opaque_result_becomes_a_jpeg_at_least_as_close_to_the_source_as_webp_at_92(name: str) -> None:
    source = PICTURES[name]()
    data = encoded(source, "PNG")
    limit = len(data) - 1
    assert limit >= LIMIT_FLOOR
    fitted = fit_under(data, limit)
    assert fitted.info.content_type == "image/jpeg" and fitted.info.size <= limit
    assert (fitted.info.width, fitted.info.height) == source.size, "re-encoding alone fits: no pixel lost"
    webp = decode(encoded(source, "WEBP", quality=92, method=4))
    assert psnr(decode(fitted.data), source) >= psnr(webp, source)


def test_transparency_is_kept_and_an_alpha_channel_that_is_all_opaque_is_not() -> None:
    picture = photo(700, 500, 8.0)
    see_through = picture.copy()
    see_through.putalpha(Image.linear_gradient("L").resize(picture.size))
    opaque = picture.convert("RGBA")
    for image, kind in ((see_through, "image/webp"), (opaque, "image/jpeg")):
        data = encoded(image, "PNG")
        fitted = fit_under(data, len(data) - 1)
        assert fitted.info.content_type == kind
    kept = decode(fit_under(encoded(see_through, "PNG"), LIMIT_FLOOR * 4).data)
    assert kept.mode == "RGBA" and ImageStat.Stat(kept.getchannel("A")).extrema[0][0] < 128


def test_the_recipe_rides_along_in_a_fitted_jpeg() -> None:
    recipe = Recipe("paint it blue", 7, None, "high", "auto", "4K", "fal")
    data = encoded(photo(1024, 768, 8.0), "PNG")
    fitted = fit_under(data, len(data) - 1, exif=exif(recipe))
    image = decode(fitted.data)
    assert image.format == "JPEG"
    comment = image.getexif().get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.UserComment]
    assert json.loads(comment[8:]) == dataclasses.asdict(recipe)


def test_a_quality_that_cannot_fit_is_judged_from_a_sample_not_a_whole_encoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = colour_noise(1024, 1024, 20.0)
    second_last, last = encoders.JPEG.qualities[-2:]
    sizes = {q: len(encoders.JPEG.encode(source, q, None, None) or b"") for q in (second_last, last)}
    limit = (sizes[second_last] + sizes[last]) // 2  # enough for the last quality only
    whole: list[int] = []

    def encode(image: Image.Image, quality: int, tags: bytes | None, cap: int | None) -> bytes | None:
        if image.size == source.size:
            whole.append(quality)
        return encoders._encode_jpeg(image, quality, tags, cap)

    monkeypatch.setattr(encoders, "JPEG", dataclasses.replace(encoders.JPEG, encode=encode))
    fitted = fit_under(encoded(source, "PNG", compress_level=1), limit)
    assert whole == [last]
    assert fitted.info.size == sizes[last] and fitted.data == encoders.JPEG.encode(source, last, None, None)


def test_the_sample_predicts_a_photo_within_a_few_percent() -> None:
    source = photo(2048, 1536, 8.0)
    for quality in encoders.JPEG.qualities:
        estimate, file = encoders.attempt(source, encoders.JPEG, quality, None, 1)
        real = len(encoders.JPEG.encode(source, quality, None, None) or b"")
        assert file is None and abs(estimate / real - 1) < 0.03


def test_a_picture_the_sample_misjudges_still_fits() -> None:
    # Flat grey exactly where the sample's bands are taken, noise everywhere else: the sample
    # says the file is small, and the encoding must stop at the limit and shrink instead.
    source = colour_noise(1024, 1024, 40.0)
    flat = Image.new("RGB", (1024, 16), (128, 128, 128))
    for top in range(64, 1024, 128):
        source.paste(flat, (0, top))
    estimate, _ = encoders.attempt(source, encoders.JPEG, 84, None, 1)
    real = len(encoders.JPEG.encode(source, 84, None, None) or b"")
    assert estimate < real / 4, "the sample really is misled"
    limit = real // 2
    assert encoders.attempt(source, encoders.JPEG, 84, None, limit) == (estimate, None)
    fitted = fit_under(encoded(source, "PNG", compress_level=1), limit)
    assert fitted.info.content_type == "image/jpeg" and fitted.info.size <= limit


def test_shrinking_in_bands_matches_resizing_whole() -> None:
    source = photo(1500, 1100, 8.0)
    for scale in (0.95, 0.5, 0.1):
        banded = encoders.resized(source, scale)
        whole = source.resize(banded.size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        extrema = ImageStat.Stat(ImageChops.difference(banded, whole)).extrema
        assert max(high for _, high in extrema) <= 2, scale
