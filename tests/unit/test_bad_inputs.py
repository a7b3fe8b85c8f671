"""Every case of the generated corpus through the checks a real upload meets.

Each image goes through the cheap check on Discord-like metadata, then `inspect`, `normalize`
and `fit_under`; each mask through `mask_problem` and both converters; each prompt through
Discord's own length limit, `clean_prompt` and `prompt_problem`. A case ends in a clear
refusal or a correct result, never in another exception.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator

import pytest
from _pytest.mark import ParameterSet
from PIL import ExifTags, Image, ImageCms

from bot.pictures.images import ImageProblem, fit_under, inspect, normalize
from bot.pictures.masks import EVERYTHING_CHANGES, NOTHING_TO_CHANGE, mask_problem, to_alpha_mask, to_bw_mask
from bot.pictures.validation import AttachmentFacts, attachment_problem, clean_prompt, prompt_problem
from cogs.edit import SLASH_PROMPT_MAX
from cogs.forms import MODAL_PROMPT_MAX
from cogs.render import quote_prompt
from tests.data.make_corpus import (
    HOLE,
    PHOTO_SIZE,
    QUADRANTS,
    Case,
    corpus,
    encode,
    photo,
    turned_jpeg,
)
from tests.images import decode, noisy_png

CASES = corpus()
BY_NAME = {case.name: case for case in CASES}
PHOTO_CASES = {
    "png_ok",
    "jpeg_ok",
    "webp_ok",
    "gif_animated",
    "webp_animated",
    "png_animated",
    "jpeg_cmyk",
    "png_16bit_rgb",
    "jpeg_exif_6",
    "jpeg_exif_8",
    "png_palette_alpha",
    "jpeg_mpo",
}
"""The `ok` images made from `photo()`, whose four quadrants must survive normalising."""
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


def params(*kinds: str) -> list[ParameterSet]:
    return [pytest.param(case, id=case.name) for case in CASES if case.kind in kinds]


def discord_facts(case: Case, monkeypatch: pytest.MonkeyPatch) -> AttachmentFacts:
    """What Discord reports: a size probed from the header (no decoding, no bomb limit), or none."""
    width = height = None
    # Discord shows a file it cannot read without a size, whatever went wrong.
    with monkeypatch.context() as patch, warnings.catch_warnings(), contextlib.suppress(Exception):
        patch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(io.BytesIO(case.data)) as image:
            width, height = image.size
    return AttachmentFacts(case.filename, case.content_type, len(case.data), width, height)


def assert_one_sentence(message: str) -> None:
    assert message and "\n" not in message and len(message) < 200, message


def upright_quadrants(image: Image.Image, tolerance: int) -> None:
    width, height = image.size
    points = {
        "top_left": (width // 4, height // 4),
        "top_right": (3 * width // 4, height // 4),
        "bottom_left": (width // 4, 3 * height // 4),
        "bottom_right": (3 * width // 4, 3 * height // 4),
    }
    rgb = image.convert("RGB")
    for corner, point in points.items():
        got = rgb.getpixel(point)
        assert isinstance(got, tuple)
        assert max(abs(a - b) for a, b in zip(got, QUADRANTS[corner], strict=True)) <= tolerance, corner


def sent(case: Case) -> tuple[bytes, Image.Image]:
    """The bytes a host would get after normalising, and their decoded single frame."""
    normalized = normalize(case.data)
    data = case.data if normalized.data is None else normalized.data
    image = decode(data)
    info = normalized.info
    assert (info.width, info.height, info.size) == (image.width, image.height, len(data))
    assert info.content_type == Image.MIME[image.format or ""]
    return data, image


@pytest.mark.parametrize("case", params("image"))
def test_image_case(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    refusals = []
    problem = attachment_problem(discord_facts(case, monkeypatch))
    if problem is not None:
        refusals.append(problem)
    try:
        inspect(case.data)
        data, image = sent(case)
    except ImageProblem as exc:
        refusals.append(str(exc))
    else:
        assert image.mode in {"RGB", "RGBA", "L", "LA"}
        assert not getattr(image, "is_animated", False)
        if not refusals:  # results, not inputs, are fitted; only usable inputs become results
            assert fit_under(data, 400).info.size <= 400
    for message in refusals:
        assert_one_sentence(message)
    assert bool(refusals) == (case.expect == "refused"), refusals


@pytest.mark.parametrize("name", sorted(PHOTO_CASES))
def test_normalised_photos_are_upright_first_frames(name: str) -> None:
    _, image = sent(BY_NAME[name])
    assert image.size == PHOTO_SIZE
    upright_quadrants(image, tolerance=12)


@pytest.mark.parametrize("name", ["png_ok", "jpeg_ok", "webp_ok"])
def test_plain_uploads_go_as_they_are_so_hosts_can_use_the_discord_url(name: str) -> None:
    assert normalize(BY_NAME[name].data).data is None


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("gif_animated", "image/png"),
        ("webp_animated", "image/png"),
        ("png_animated", "image/png"),
        ("png_16bit_grey", "image/png"),
        ("png_16bit_rgb", "image/png"),
        ("png_palette_alpha", "image/png"),
        ("jpeg_cmyk", "image/jpeg"),
        ("jpeg_exif_6", "image/jpeg"),
        ("jpeg_exif_8", "image/jpeg"),
    ],
)
def test_uploads_a_host_could_misread_are_re_encoded(name: str, content_type: str) -> None:
    normalized = normalize(BY_NAME[name].data)
    assert normalized.data is not None
    assert normalized.info.content_type == content_type


def test_exif_orientation_is_applied_once_and_removed() -> None:
    for orientation in (6, 8):
        normalized = normalize(turned_jpeg(orientation))
        assert normalized.data is not None
        image = decode(normalized.data)
        assert image.getexif().get(0x0112) is None
        upright_quadrants(image, tolerance=12)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    _, image = sent(BY_NAME["png_16bit_grey"])
    assert image.mode == "L"
    assert image.getpixel((0, 0)) == round(30_000 / 257)
    assert image.getpixel((PHOTO_SIZE[0] - 1, 0)) == 255


def test_palette_transparency_survives_as_alpha() -> None:
    _, image = sent(BY_NAME["png_palette_alpha"])
    assert image.mode == "RGBA"
    alpha = image.getchannel("A")
    assert alpha.getpixel((0, 0)) == 0
    assert alpha.getpixel((PHOTO_SIZE[0] - 1, PHOTO_SIZE[1] - 1)) == 255


def test_a_cmyk_profile_is_not_carried_onto_rgb_pixels() -> None:
    data = encode(photo(mode="CMYK"), "JPEG", quality=95, icc_profile=b"a CMYK profile")
    normalized = normalize(data)
    assert normalized.data is not None
    image = decode(normalized.data)
    assert image.mode == "RGB" and "icc_profile" not in image.info


def test_an_rgb_profile_is_kept_when_turning() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"  # must not travel along
    stored = photo().transpose(Image.Transpose.ROTATE_90)
    normalized = normalize(encode(stored, "JPEG", quality=95, exif=exif.tobytes(), icc_profile=profile))
    assert normalized.data is not None
    image = decode(normalized.data)
    assert image.info.get("icc_profile") == profile
    assert "exif" not in image.info


@pytest.mark.parametrize("case", params("mask"))
def test_mask_case(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    image_facts = AttachmentFacts("photo.png", "image/png", 160, *PHOTO_SIZE)
    problem = mask_problem(discord_facts(case, monkeypatch), image_facts)
    try:
        outputs = [to_bw_mask(case.data, PHOTO_SIZE), to_alpha_mask(case.data, PHOTO_SIZE)]
    except ImageProblem as exc:
        assert case.expect == "refused", exc
        assert_one_sentence(str(exc))
        assert str(exc).endswith(".")
        if problem is not None:
            assert_one_sentence(problem)
        return
    assert case.expect == "ok"
    assert problem is None
    bw, alpha = (decode(output) for output in outputs)
    centre = ((HOLE[0] + HOLE[2]) // 2, (HOLE[1] + HOLE[3]) // 2)
    assert bw.getpixel(centre) == 255 and bw.getpixel((0, 0)) == 0
    assert alpha.getchannel("A").getpixel(centre) == 0 and alpha.getchannel("A").getpixel((0, 0)) == 255


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mask_all_black", NOTHING_TO_CHANGE),
        ("mask_all_white", EVERYTHING_CHANGES),
        ("mask_all_transparent", EVERYTHING_CHANGES),
    ],
)
def test_masks_that_change_nothing_or_everything_say_so(name: str, message: str) -> None:
    with pytest.raises(ImageProblem, match=re.escape(message)):
        to_bw_mask(BY_NAME[name].data, PHOTO_SIZE)


DISCORD_LIMITS = {"slash-prompt": SLASH_PROMPT_MAX, "modal-prompt": MODAL_PROMPT_MAX, "prompt": None}


def test_the_bot_declares_discords_own_limits() -> None:
    assert (SLASH_PROMPT_MAX, MODAL_PROMPT_MAX) == (6000, 4000)


@pytest.mark.parametrize("case", params("slash-prompt", "modal-prompt", "prompt"))
def test_prompt_case(case: Case) -> None:
    text = case.data.decode()
    limit = DISCORD_LIMITS[case.kind]
    refused_by_discord = limit is not None and len(text) > limit
    problem = prompt_problem(clean_prompt(text))
    if problem is not None:
        assert_one_sentence(problem)
    assert (refused_by_discord or problem is not None) == (case.expect == "refused"), problem


def test_clean_prompt_keeps_lines_and_tabs_and_drops_other_controls() -> None:
    text = BY_NAME["prompt_controls"].data.decode()
    cleaned = clean_prompt(text)
    assert cleaned == "make the sky[31m red\nand\tbright"
    assert clean_prompt(cleaned) == cleaned
    assert clean_prompt("a\rb") == "a\nb"


def test_clean_prompt_leaves_ordinary_text_alone() -> None:
    text = "Ünïcødé 🎨 — “quotes”, emoji with joiner 👩\u200d🎨\nsecond line"
    assert clean_prompt(text) == text


def test_mentions_in_prompts_are_neutralised_when_shown() -> None:
    # Only real snowflakes (17-20 digits) can ping, so only those are escaped; `<@123>` stays inert.
    shown = quote_prompt(BY_NAME["prompt_mentions"].data.decode())
    assert "@everyone" not in shown and "@here" not in shown
    assert re.search(r"<@[!&]?\d{17,20}>", shown) is None


def test_prompt_problem_alone_refuses_a_prompt_of_control_characters() -> None:
    assert prompt_problem(BY_NAME["prompt_only_controls"].data.decode()) is not None


def test_the_cheap_check_refuses_what_inspect_refuses() -> None:
    case = BY_NAME["jpeg_48mp"]
    with pytest.raises(ImageProblem):
        inspect(case.data)
    facts = AttachmentFacts(case.filename, case.content_type, len(case.data), 8064, 6048)
    assert attachment_problem(facts) is not None


def test_fit_under_handles_a_very_wide_image() -> None:
    data = noisy_png(16_400, 8)
    fitted = fit_under(data, len(data) // 2)
    assert fitted.info.size <= len(data) // 2


def test_fit_under_keeps_sixteen_bit_grey_grey() -> None:
    fitted = fit_under(BY_NAME["png_16bit_grey"].data, 60)
    assert fitted.changed
    grey = decode(fitted.data).convert("L").getpixel((0, 0))
    assert isinstance(grey, float | int) and 100 <= grey <= 135


def iter_refusals() -> Iterator[str]:
    """Every refusal the corpus provokes, for the wording check below."""
    for case in CASES:
        if case.kind == "mask":
            try:
                to_bw_mask(case.data, PHOTO_SIZE)
            except ImageProblem as exc:
                yield str(exc)
        elif case.kind in DISCORD_LIMITS:
            problem = prompt_problem(clean_prompt(case.data.decode()))
            if problem is not None:
                yield problem


def test_mask_and_prompt_refusals_are_sentences_that_say_what_to_do() -> None:
    messages = list(iter_refusals())
    assert len(messages) >= 10
    for message in messages:
        assert message[0].isupper() and message.endswith("."), message
        assert ";" in message, f"says what happened, then what to do: {message}"
