"""Image checks and fitting results under the upload limit."""

from __future__ import annotations

import pytest

from bot.images import ImageProblem, fit_under, inspect
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
