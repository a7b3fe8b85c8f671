"""Image checks and fitting results under the upload limit."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.pictures.images import ImageProblem, fit_under, inspect
from bot.pictures.validation import AttachmentFacts, attachment_problem
from tests.images import decode, noisy_png, png


def test_inspect_reads_the_real_format() -> None:
    info = inspect(png(30, 20))
    assert (info.content_type, info.width, info.height) == ("image/png", 30, 20)


@pytest.mark.parametrize("data", [b"", b"not an image at all", png()[:40]])
def test_unreadable_files_are_refused(data: bytes) -> None:
    with pytest.raises(ImageProblem):
        inspect(data)


def test_fit_keeps_small_files_untouched() -> None:
    data = png()
    fitted = fit_under(data, 10 * 1024 * 1024)
    assert fitted.data == data and not fitted.changed


def test_fit_shrinks_until_under_the_limit() -> None:
    data = noisy_png(800, 800)
    limit = len(data) // 8
    fitted = fit_under(data, limit)
    assert fitted.changed
    assert len(fitted.data) <= limit
    image = decode(fitted.data)
    assert image.size == (fitted.info.width, fitted.info.height)


def webp(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, "WEBP", quality=10, method=0)
    return buffer.getvalue()


def test_a_webp_too_large_to_decode_within_the_budget_is_refused_before_decoding() -> None:
    # Pillow's WebP decoder holds 16 bytes a pixel: 20 MP would take 320 MB for one picture.
    data = webp(5000, 4000)
    facts = AttachmentFacts("big.webp", "image/webp", len(data), 5000, 4000)
    problem = attachment_problem(facts)
    assert problem is not None and "PNG or JPEG" in problem
    with pytest.raises(ImageProblem, match="PNG or JPEG"):
        inspect(data)
    assert attachment_problem(AttachmentFacts("big.png", "image/png", len(data), 5000, 4000)) is None


def test_fitting_shrinks_a_result_larger_than_any_host_makes_before_encoding_it() -> None:
    data = png(4000, 2500)  # 10 MP; hosts make at most 8.3 MP, and libwebp takes ~30 B/px
    fitted = fit_under(data, len(data) - 1)
    assert fitted.changed
    assert fitted.info.width * fitted.info.height <= 8_294_400
