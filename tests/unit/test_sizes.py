"""Output sizes above 1K: every answer must be one GPT Image 2 accepts, in the aspect asked for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.providers.base import IMAGE_SIZES
from bot.sizes import dimensions

# The model's limits, restated here from providers.md rather than imported, so a mistake in
# bot.sizes cannot hide in the test.
MAX_EDGE = 3840
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400
ASPECTS = {
    "square_hd": 1.0,
    "square": 1.0,
    "portrait_4_3": 3 / 4,
    "portrait_16_9": 9 / 16,
    "landscape_4_3": 4 / 3,
    "landscape_16_9": 16 / 9,
}

sources = st.none() | st.tuples(st.integers(1, 20_000), st.integers(1, 20_000))


def wanted_aspect(image_size: str, source: tuple[int, int] | None) -> float:
    if image_size != "auto":
        return ASPECTS[image_size]
    if source is None:
        return 1.0
    return min(max(source[0] / source[1], 1 / 3), 3.0)


@pytest.mark.parametrize(
    ("image_size", "resolution", "expected"),
    [
        ("landscape_16_9", "4K", (3840, 2160)),
        ("portrait_16_9", "4K", (2160, 3840)),
        ("square_hd", "4K", (2880, 2880)),
        ("square", "4K", (2880, 2880)),
        ("landscape_16_9", "2K", (2048, 1152)),
        ("square", "2K", (2048, 2048)),
        ("portrait_4_3", "2K", (1536, 2048)),
        ("auto", "2K", (2048, 2048)),
    ],
)
def test_known_sizes(image_size: str, resolution: str, expected: tuple[int, int]) -> None:
    assert dimensions(image_size, resolution, None) == expected


@given(image_size=st.sampled_from(IMAGE_SIZES), source=sources)
def test_1k_keeps_the_hosts_presets(image_size: str, source: tuple[int, int] | None) -> None:
    assert dimensions(image_size, "1K", source) is None


def test_auto_follows_the_first_image_within_3_to_1() -> None:
    assert dimensions("auto", "2K", (3000, 4000)) == (1536, 2048)
    assert dimensions("auto", "4K", (10_000, 100)) == (3840, 1280)
    assert dimensions("auto", "2K", (100, 10_000)) == (672, 2016)  # 2048x672 would be past 3:1


@given(image_size=st.sampled_from(IMAGE_SIZES), source=sources)
def test_every_size_is_one_the_model_accepts(image_size: str, source: tuple[int, int] | None) -> None:
    made = {}
    for resolution in ("2K", "4K"):
        size = dimensions(image_size, resolution, source)
        assert size is not None
        width, height = size
        assert width % 16 == 0 and height % 16 == 0
        assert max(width, height) <= MAX_EDGE
        assert max(width, height) <= 3 * min(width, height)
        assert MIN_PIXELS <= width * height <= MAX_PIXELS
        assert width / height == pytest.approx(wanted_aspect(image_size, source), rel=0.03)
        made[resolution] = size
    (width_2k, height_2k), (width_4k, height_4k) = made["2K"], made["4K"]
    assert width_4k * height_4k >= width_2k * height_2k
    # As large as the limits allow, less the rounding to multiples of 16.
    assert 2048 - 48 < max(width_2k, height_2k) <= 2048
    assert max(width_4k, height_4k) > MAX_EDGE - 48 or width_4k * height_4k > 0.97 * MAX_PIXELS


@pytest.mark.parametrize(
    ("image_size", "resolution", "source"),
    [("huge", "2K", None), ("square", "8K", None), ("square", "1k", None), ("auto", "2K", (0, 10))],
)
def test_unknown_options_are_refused(
    image_size: str, resolution: str, source: tuple[int, int] | None
) -> None:
    with pytest.raises(ValueError, match=r"unknown|aspect"):
        dimensions(image_size, resolution, source)
