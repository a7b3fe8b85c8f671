"""The probes that spare a decode: they vouch only for what the decode would accept unchanged."""

from __future__ import annotations

import contextlib
import io
import itertools
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.pictures.images import (
    ImageProblem,
    Normalized,
    PngCheck,
    _png_whole,
    inspect,
    normalize,
    probe,
    sendable,
)
from tests.data.make_corpus import Case, corpus, encode, photo

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
IMAGES = [pytest.param(case, id=case.name) for case in corpus() if case.kind == "image"]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def exif_after_pixels(orientation: int) -> bytes:
    """A PNG whose EXIF (turning it) follows the pixels, where only Pillow's decode reads it."""
    data = encode(photo(), "PNG")
    exif = Image.Exif()
    exif[0x0112] = orientation
    end = data.rfind(b"IEND") - 4
    return data[:end] + _png_chunk(b"eXIf", exif.tobytes()[6:]) + data[end:]


@pytest.mark.parametrize("case", IMAGES)
def test_what_the_probes_vouch_for_the_decode_accepts_as_it_is(case: Case) -> None:
    try:
        vouched = sendable(case.data)
    except ImageProblem:
        vouched = None
        with pytest.raises(ImageProblem):
            normalize(case.data)
    if vouched is not None:
        assert normalize(case.data) == Normalized(vouched, vouched, None)
    try:
        whole = probe(case.data)
    except ImageProblem:
        whole = None
        with pytest.raises(ImageProblem):
            inspect(case.data)
    if whole is not None:
        assert whole == inspect(case.data)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_a_plain_photo_needs_no_decode(image_format: str, tmp_path: Path) -> None:
    data = encode(photo(), image_format)
    expected = inspect(data)
    assert sendable(data) == expected
    (tmp_path / "result").write_bytes(data)
    assert probe(tmp_path / "result") == expected


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("image_format", "damage"),
    [
        ("PNG", lambda data: data[: len(data) - 20]),
        ("PNG", lambda data: flipped(data, len(data) // 2)),
        ("PNG", lambda data: data + b"trailing"),
        ("JPEG", lambda data: data[: len(data) * 2 // 3]),
        ("WEBP", lambda data: data[: len(data) - 10]),
    ],
    ids=["png cut", "png flipped byte", "png trailing bytes", "jpeg cut", "webp cut"],
)
def test_damage_or_doubt_leaves_the_judgement_to_the_decode(image_format: str, damage: object) -> None:
    assert callable(damage)
    data = damage(encode(photo((256, 192)), image_format))
    for check in (probe, sendable):
        with contextlib.suppress(ImageProblem):  # refused from the header, as the decode would
            assert check(data) is None


def test_exif_after_the_pixels_sends_a_png_to_be_turned() -> None:
    data = exif_after_pixels(6)
    assert sendable(data) is None
    assert normalize(data).data is not None  # the decode finds the orientation and turns it
    with Image.open(io.BytesIO(data)) as image:
        assert "exif" not in image.info  # what the header alone says


def _variants() -> list[tuple[bytes, bool]]:
    """PNGs whole and damaged in every way `_png_whole` judges (cut, a byte changed, bytes after
    the end, EXIF after the pixels, no pixels, another format), each with its verdict."""
    whole = encode(photo(), "PNG")
    end = whole.rfind(b"IEND") - 4
    no_pixels = whole[:8] + _png_chunk(b"IHDR", whole[16:29]) + whole[end:]
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0x40
    return [
        (whole, True),
        (whole[: len(whole) // 2], False),
        (whole[:-1], False),
        (bytes(flipped), False),
        (whole + b"\x00", False),
        (exif_after_pixels(6), False),
        (no_pixels, False),
        (encode(photo(), "JPEG"), False),
        (b"", False),
    ]


@given(
    case=st.sampled_from(_variants()),
    cuts=st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12),
)
def test_a_png_checked_block_by_block_gets_the_verdict_of_the_whole_file(
    case: tuple[bytes, bool], cuts: list[int]
) -> None:
    """A downloaded result is checked as its blocks are written instead of being read back:
    wherever the blocks fall, the verdict must be the one the whole file gets."""
    data, whole = case
    check = PngCheck()
    edges = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    for start, stop in itertools.pairwise(edges):
        check.feed(data[start:stop])
    assert check.whole == _png_whole(data) == whole


def test_a_checked_download_is_judged_from_its_header_and_the_check(tmp_path: Path) -> None:
    whole = encode(photo(), "PNG")
    path = tmp_path / "result.png"
    path.write_bytes(whole)
    check = PngCheck()
    check.feed(whole)
    info = probe(path, checked=check)
    assert info is not None and info == probe(path)
    damaged = PngCheck()
    damaged.feed(whole[:-5])
    assert probe(path, checked=damaged) is None  # the bytes the host sent were not whole
