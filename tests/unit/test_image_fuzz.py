"""Random and mutated files through every function that decodes an upload: ImageProblem or a result.

The mutations start from the corpus's valid files and, for PNG, usually repair the chunk
checksums afterwards, so that the damage reaches the decoders instead of stopping at the first
CRC check. Examples are derandomised so that CI sees the same ones on every run; for a deeper
search, drop `derandomize` and raise `max_examples` locally.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.pictures.images import ImageProblem, fit_under, inspect, normalize
from bot.pictures.masks import to_alpha_mask, to_bw_mask
from tests.data.make_corpus import PHOTO_SIZE, corpus
from tests.images import decode

# Pillow warns about much of what the mutations do to headers; only exceptions matter here.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning", "ignore::UserWarning")
SEEDS = [case.data for case in corpus() if case.kind in ("image", "mask") and 0 < len(case.data) <= 20_000]
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"II*\x00"]

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fix_png_checksums(data: bytes) -> bytes:
    """Recompute every complete chunk's CRC, so the mutation is judged by the decoder, not the CRC."""
    if not data.startswith(MAGIC[0]):
        return data
    out = bytearray(data)
    position = 8
    while position + 12 <= len(out):
        (length,) = struct.unpack(">I", out[position : position + 4])
        end = position + 8 + length
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack(">I", zlib.crc32(out[position + 4 : end]))
        position = end + 4
    return bytes(out)


T = TypeVar("T")
Mutation = tuple[str, float, bytes]


def mutate(seed: bytes, mutations: list[Mutation], fix_checksums: bool) -> bytes:
    data = bytearray(seed)
    for kind, where, payload in mutations:
        at = min(int(where * len(data)), max(len(data) - 1, 0))
        if kind == "overwrite":
            data[at : at + len(payload)] = payload
        elif kind == "insert":
            data[at:at] = payload
        elif kind == "delete":
            del data[at : at + len(payload)]
        else:
            del data[at:]
    return fix_png_checksums(bytes(data)) if fix_checksums else bytes(data)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["overwrite", "overwrite", "insert", "delete", "truncate"]),
        st.floats(0, 1),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)
mutated = st.builds(mutate, st.sampled_from(SEEDS), mutations, st.booleans())
anything = st.one_of(
    st.binary(max_size=2048),
    st.tuples(st.sampled_from(MAGIC), st.binary(max_size=2048)).map(lambda pair: pair[0] + pair[1]),
    mutated,
)


def only_image_problems(call: Callable[[], T]) -> T | None:
    """The call's result, or None when it refused the file the way members are told."""
    try:
        return call()
    except ImageProblem:
        return None


@FUZZ
@given(anything)
def test_inspect_and_normalize(data: bytes) -> None:
    only_image_problems(lambda: inspect(data))
    normalized = only_image_problems(lambda: normalize(data))
    if normalized is not None and normalized.data is not None:
        again = normalize(normalized.data)
        assert again.data is None, "a normalised upload is final"
        assert again.info == normalized.info


@FUZZ
@given(anything, st.integers(100, 5000))
def test_fit_under(data: bytes, limit: int) -> None:
    fitted = only_image_problems(lambda: fit_under(data, limit))
    if fitted is not None:
        assert fitted.info.size <= limit
        assert decode(fitted.data).size == (fitted.info.width, fitted.info.height)


@FUZZ
@given(anything, st.sampled_from([PHOTO_SIZE, (100, 75), (48, 64)]))
def test_masks(data: bytes, size: tuple[int, int]) -> None:
    for convert, mode in ((to_bw_mask, "L"), (to_alpha_mask, "RGBA")):
        output = only_image_problems(partial(convert, data, size))
        if output is not None:
            image = decode(output)
            assert (image.format, image.mode, image.size) == ("PNG", mode, size)
