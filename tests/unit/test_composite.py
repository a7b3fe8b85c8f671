"""Masks that hold: the host's output laid over the original through the member's mask."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot.pictures.composite import FEATHER, composite

SIZE = (240, 120)
BOX = (60, 30, 180, 90)  # the editable region
MARGIN = int(FEATHER * 4)


def original() -> Image.Image:
    image = Image.new("RGB", SIZE)
    image.putdata([(x % 256, (y * 2) % 256, (x * y) % 256) for y in range(SIZE[1]) for x in range(SIZE[0])])
    return image


def mask() -> Image.Image:
    editable = Image.new("L", SIZE, 0)
    editable.paste(255, BOX)
    return editable


def save(image: Image.Image, path: Path, fmt: str = "PNG") -> Path:
    image.save(path, fmt)
    return path


def far_outside(size: tuple[int, int]) -> list[tuple[int, int]]:
    left, top, right, bottom = BOX
    return [
        (x, y)
        for y in range(size[1])
        for x in range(size[0])
        if x < left - MARGIN or x >= right + MARGIN or y < top - MARGIN or y >= bottom + MARGIN
    ]


def far_inside() -> list[tuple[int, int]]:
    left, top, right, bottom = BOX
    return [
        (x, y) for y in range(top + MARGIN, bottom - MARGIN) for x in range(left + MARGIN, right - MARGIN)
    ]


def test_a_host_that_repaints_everything_still_keeps_the_outside(tmp_path: Path) -> None:
    base = original()
    repainted = Image.new("RGB", SIZE, (250, 5, 5))
    done = composite(
        save(base, tmp_path / "o.png"),
        save(repainted, tmp_path / "out.png"),
        save(mask(), tmp_path / "m.png"),
    )
    assert done.data is not None and done.size == SIZE
    assert done.changed_outside > 0.99  # a few original pixels happen to be near that red
    result = Image.open(io.BytesIO(done.data)).convert("RGB")
    assert all(result.getpixel(p) == base.getpixel(p) for p in far_outside(SIZE))
    assert all(result.getpixel(p) == (250, 5, 5) for p in far_inside())


def test_a_host_that_honoured_the_mask_changed_nothing_outside(tmp_path: Path) -> None:
    base = original()
    honoured = base.copy()
    honoured.paste((0, 200, 0), BOX)
    done = composite(
        save(base, tmp_path / "o.png"), save(honoured, tmp_path / "out.png"), save(mask(), tmp_path / "m.png")
    )
    assert done.changed_outside == 0.0


def test_a_larger_output_keeps_its_resolution_and_a_different_shape_is_left_alone(tmp_path: Path) -> None:
    base, editable = save(original(), tmp_path / "o.png"), save(mask(), tmp_path / "m.png")
    bigger = composite(base, save(Image.new("RGB", (480, 240), (9, 9, 9)), tmp_path / "big.png"), editable)
    assert bigger.size == (480, 240) and bigger.data is not None
    square = composite(base, save(Image.new("RGB", (200, 200), (9, 9, 9)), tmp_path / "sq.png"), editable)
    assert square.data is None and square.size == (200, 200)


def test_the_result_keeps_the_hosts_format(tmp_path: Path) -> None:
    done = composite(
        save(original(), tmp_path / "o.png"),
        save(Image.new("RGB", SIZE, (9, 9, 9)), tmp_path / "out.jpg", "JPEG"),
        save(mask(), tmp_path / "m.png"),
    )
    assert done.data is not None and Image.open(io.BytesIO(done.data)).format == "JPEG"
