"""Output sizes: every answer must be one GPT Image 2 accepts, in the aspect asked for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.pictures.sizes import IMAGE_SIZES, dimensions
from bot.providers.base import PRESET_SIZES

# fal's documented `image_size` presets (width, height); Runflow and each::labs take the same names.
from tests.fakes.fal import PRESET_SIZES as FAL_PRESETS

# The model's limits, restated here from providers.md rather than imported, so a mistake in
# bot.pictures.sizes cannot hide in the test.
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


def within_limits(width: int, height: int) -> bool:
    return (
        width % 16 == 0
        and height % 16 == 0
        and max(width, height) <= MAX_EDGE
        and max(width, height) <= 3 * min(width, height)
        and MIN_PIXELS <= width * height <= MAX_PIXELS
    )


def test_preset_only_hosts_offer_exactly_the_presets_within_the_limits() -> None:
    """fal's `square` (512x512) and 16:9 presets (1024x576) are under the 655,360-pixel minimum."""
    valid = {name for name, size in FAL_PRESETS.items() if within_limits(*size)}
    assert {"auto"} | valid == PRESET_SIZES
    assert valid == {"square_hd", "portrait_4_3", "landscape_4_3"}


@pytest.mark.parametrize(
    ("image_size", "expected"),
    [
        ("square_hd", (1024, 1024)),
        ("square", (1024, 1024)),
        ("landscape_4_3", (1024, 768)),
        ("portrait_4_3", (768, 1024)),
        ("landscape_16_9", (1088, 608)),
        ("portrait_16_9", (608, 1088)),
    ],
)
def test_1k_sizes_are_never_below_the_minimum(image_size: str, expected: tuple[int, int]) -> None:
    """fal's 512x512 and 1024x576 presets would be refused or unspecified; 1K asks for an exact size."""
    assert dimensions(image_size, "1K", None) == expected


def test_auto_follows_the_first_image_within_3_to_1() -> None:
    assert dimensions("auto", "2K", (3000, 4000)) == (1536, 2048)
    assert dimensions("auto", "4K", (10_000, 100)) == (3840, 1280)
    assert dimensions("auto", "2K", (100, 10_000)) == (672, 2016)  # 2048x672 would be past 3:1
    assert dimensions("auto", "1K", (10_000, 100)) == (1440, 480)  # 1024x336 is under the minimum


@given(image_size=st.sampled_from(IMAGE_SIZES), source=sources)
def test_every_size_is_one_the_model_accepts(image_size: str, source: tuple[int, int] | None) -> None:
    made = {}
    for resolution in ("1K", "2K", "4K"):
        size = dimensions(image_size, resolution, source)
        assert size is not None
        width, height = size
        assert width % 16 == 0 and height % 16 == 0
        assert max(width, height) <= MAX_EDGE
        assert max(width, height) <= 3 * min(width, height)
        assert MIN_PIXELS <= width * height <= MAX_PIXELS
        assert width / height == pytest.approx(wanted_aspect(image_size, source), rel=0.03)
        made[resolution] = size
    (width_1k, height_1k), (width_2k, height_2k), (width_4k, height_4k) = made["1K"], made["2K"], made["4K"]
    assert width_4k * height_4k >= width_2k * height_2k >= width_1k * height_1k
    # 1K is the 1024 long edge where that is enough pixels, else the smallest size that is.
    assert max(width_1k, height_1k) == 1024 or width_1k * height_1k < MIN_PIXELS + 3 * 16 * 1440
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
