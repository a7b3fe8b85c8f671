"""Masks in both conventions, converted for both kinds of host, and the masks that are refused."""

from __future__ import annotations

import random
import warnings

import pytest
from PIL import Image

from bot.pictures.images import ImageProblem
from bot.pictures.masks import (
    EVERYTHING_CHANGES,
    NOTHING_TO_CHANGE,
    UNREADABLE,
    mask_problem,
    to_alpha_mask,
    to_bw_mask,
)
from bot.pictures.validation import AttachmentFacts
from tests.data.make_corpus import HOLE, PHOTO_SIZE, alpha_mask, bw_mask, encode, png_header
from tests.images import decode

INSIDE = [(HOLE[0], HOLE[1]), (HOLE[2] - 1, HOLE[3] - 1), (32, 24)]
OUTSIDE = [(0, 0), (HOLE[0] - 1, HOLE[1]), (HOLE[2], HOLE[3] - 1), (63, 47)]


def editable_of(mask: bytes, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """Both outputs, checked against each other, as one 'may change' map."""
    bw = decode(to_bw_mask(mask, size))
    alpha = decode(to_alpha_mask(mask, size))
    assert (bw.format, bw.mode, bw.size) == ("PNG", "L", size)
    assert (alpha.format, alpha.mode, alpha.size) == ("PNG", "RGBA", size)
    assert set(bw.tobytes()) == {0, 255}, "edges must stay hard"
    assert set(alpha.getchannel("A").tobytes()) == {0, 255}
    inverted = alpha.getchannel("A").point(lambda value: 255 - value)
    assert inverted.tobytes() == bw.tobytes(), "the two outputs disagree"
    return bw


def assert_hole(editable: Image.Image) -> None:
    assert [editable.getpixel(point) for point in INSIDE] == [255] * len(INSIDE)
    assert [editable.getpixel(point) for point in OUTSIDE] == [0] * len(OUTSIDE)


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(encode(bw_mask(), "PNG"), id="black-white"),
        pytest.param(encode(alpha_mask(), "PNG"), id="alpha"),
        pytest.param(encode(alpha_mask((255, 255, 255, 255)), "PNG"), id="alpha-over-white"),
        pytest.param(encode(bw_mask(mode="RGBA"), "PNG"), id="opaque-rgba-read-as-luminance"),
        pytest.param(encode(bw_mask(mode="RGB"), "JPEG", quality=60), id="lossy-jpeg"),
        pytest.param(encode(bw_mask(mode="P"), "GIF"), id="gif-palette"),
        pytest.param(encode(bw_mask(mode="1"), "PNG"), id="bilevel"),
        pytest.param(encode(alpha_mask().convert("LA"), "PNG"), id="grey-alpha"),
        pytest.param(encode(bw_mask(), "WEBP", lossless=True), id="webp"),
    ],
)
def test_both_conventions_mark_the_same_region(mask: bytes) -> None:
    assert_hole(editable_of(mask))


def test_alpha_wins_over_the_colours_under_it() -> None:
    # White everywhere, transparent only over HOLE: by luminance it would mark everything.
    assert_hole(editable_of(encode(alpha_mask((255, 255, 255, 255)), "PNG")))


def test_palette_transparency_is_an_alpha_mask() -> None:
    image = Image.new("P", PHOTO_SIZE, 1)
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.paste(0, HOLE)
    assert_hole(editable_of(encode(image, "PNG", transparency=0)))


@pytest.mark.parametrize(("grey", "editable"), [(127, 0), (128, 255)])
def test_luminance_is_cut_at_half(grey: int, editable: int) -> None:
    image = bw_mask()
    image.paste(grey, (0, 0, 8, 8))
    assert editable_of(encode(image, "PNG")).getpixel((0, 0)) == editable


@pytest.mark.parametrize(("alpha", "editable"), [(127, 255), (128, 0)])
def test_alpha_is_cut_at_half(alpha: int, editable: int) -> None:
    image = alpha_mask()
    image.paste((0, 0, 0, alpha), (0, 0, 8, 8))
    assert editable_of(encode(image, "PNG")).getpixel((0, 0)) == editable


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", PHOTO_SIZE, 30_000)  # under half of 65535: keep
    image.paste(65_535, HOLE)
    assert_hole(editable_of(encode(image, "PNG")))


@pytest.mark.parametrize("size", [(16, 12), (32, 24), (128, 96), (640, 480)])
def test_other_sizes_of_the_same_shape_are_resized(size: tuple[int, int]) -> None:
    assert_hole(editable_of(encode(bw_mask(size), "PNG")))


@pytest.mark.parametrize("size", [(65, 48), (64, 49), (63, 48), (17, 13), (1300, 960)])
def test_shapes_within_rounding_are_accepted(size: tuple[int, int]) -> None:
    editable = editable_of(encode(bw_mask(size), "PNG"))
    assert editable.getpixel((32, 24)) == 255
    assert editable.getpixel((0, 0)) == 0


def test_resizing_is_nearest_neighbour_to_any_target() -> None:
    editable = editable_of(encode(bw_mask(), "PNG"), (100, 75))
    assert editable.getpixel((25, 19)) == 255
    assert editable.getpixel((24, 18)) == 0
    assert editable.getpixel((74, 55)) == 255
    assert editable.getpixel((75, 56)) == 0


def test_mask_is_turned_upright_by_its_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = bw_mask().transpose(Image.Transpose.ROTATE_90)
    assert_hole(editable_of(encode(sideways, "PNG", exif=exif.tobytes())))


def refusal(mask: bytes, size: tuple[int, int] = PHOTO_SIZE) -> str:
    with pytest.raises(ImageProblem) as bw:
        to_bw_mask(mask, size)
    with pytest.raises(ImageProblem) as alpha:
        to_alpha_mask(mask, size)
    assert str(bw.value) == str(alpha.value)
    message = str(bw.value)
    assert message.endswith(".") and "\n" not in message and len(message) < 160
    return message


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        pytest.param(encode(Image.new("L", PHOTO_SIZE, 0), "PNG"), NOTHING_TO_CHANGE, id="all-black"),
        pytest.param(
            encode(Image.new("RGBA", PHOTO_SIZE, (0, 0, 0, 255)), "PNG"), NOTHING_TO_CHANGE, id="opaque-black"
        ),
        pytest.param(encode(Image.new("L", PHOTO_SIZE, 255), "PNG"), EVERYTHING_CHANGES, id="all-white"),
        pytest.param(
            encode(Image.new("RGBA", PHOTO_SIZE, (0, 0, 0, 0)), "PNG"), EVERYTHING_CHANGES, id="transparent"
        ),
        pytest.param(b"", "The mask file is empty; attach it again.", id="empty"),
        pytest.param(b"GIF89a not really", UNREADABLE, id="garbage"),
        pytest.param(encode(bw_mask(), "PNG")[:70], UNREADABLE, id="truncated"),
        pytest.param(encode(bw_mask(), "TIFF"), UNREADABLE, id="tiff"),
        pytest.param(encode(bw_mask(), "BMP"), UNREADABLE, id="bmp"),
    ],
)
def test_refusals_say_what_to_do(mask: bytes, message: str) -> None:
    assert refusal(mask) == message


def test_the_whole_image_message_suggests_no_mask() -> None:
    assert "whole image" in EVERYTHING_CHANGES and "without a mask" in EVERYTHING_CHANGES


def test_a_region_lost_in_downscaling_counts_as_nothing() -> None:
    image = Image.new("L", (640, 480), 0)
    image.putpixel((3, 3), 255)  # nearest-neighbour samples (5, 5), (15, 15), ...
    assert refusal(encode(image, "PNG")) == NOTHING_TO_CHANGE


@pytest.mark.parametrize("size", [(48, 48), (60, 48), (48, 64), (640, 48)])
def test_a_different_shape_is_refused_not_stretched(size: tuple[int, int]) -> None:
    message = refusal(encode(bw_mask(size), "PNG"))
    assert f"{size[0]}×{size[1]}" in message and "64×48" in message


def test_absurd_masks_are_refused_before_decoding() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert "7000×7000" in refusal(png_header(7000))  # over MAX_PIXELS, under Pillow's own limit
    assert "too large to open safely" in refusal(png_header(30_000))


@pytest.mark.parametrize("size", [(0, 10), (10, 0), (10_000, 10_000)])
def test_an_impossible_target_is_a_programming_error(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="cannot be made") as caught:
        to_bw_mask(encode(bw_mask(), "PNG"), size)
    assert not isinstance(caught.value, ImageProblem)


def test_even_a_noise_mask_stays_under_openais_4_mb_at_its_largest_size() -> None:
    size = (1536, 1024)
    bits = random.Random(3).randbytes(size[0] * size[1] // 8)
    noise = Image.frombytes("1", size, bits)
    assert len(to_alpha_mask(encode(noise, "PNG"), size)) < 4_000_000


def facts(
    name: str, width: int | None, height: int | None, content_type: str = "image/png"
) -> AttachmentFacts:
    return AttachmentFacts(name, content_type, 2048, width, height)


def test_mask_problem_accepts_a_mask_of_the_same_shape() -> None:
    image = facts("photo.jpg", 4032, 3024, "image/jpeg")
    assert mask_problem(facts("mask.png", 1008, 756), image) is None
    assert mask_problem(facts("mask.png", 4032, 3024), image) is None


def test_mask_problem_accepts_a_quarter_turn_because_exif_may_differ() -> None:
    assert mask_problem(facts("mask.png", 3024, 4032), facts("photo.jpg", 4032, 3024)) is None


def test_mask_problem_refuses_another_shape() -> None:
    message = mask_problem(facts("mask.png", 1000, 1000), facts("photo.jpg", 4032, 3024))
    assert message is not None and "1000×1000" in message and "4032×3024" in message


@pytest.mark.parametrize(
    "mask",
    [facts("mask.svg", None, None, "image/svg+xml"), facts("mask.png", None, None), facts("mask.png", 8, 6)],
)
def test_mask_problem_refuses_what_is_not_a_usable_image(mask: AttachmentFacts) -> None:
    message = mask_problem(mask, facts("photo.jpg", 640, 480))
    assert message is not None and "mask." in message


def test_mask_problem_leaves_an_unknown_image_size_to_the_image_check() -> None:
    assert mask_problem(facts("mask.png", 64, 48), facts("photo.heic", None, None, "image/heic")) is None
