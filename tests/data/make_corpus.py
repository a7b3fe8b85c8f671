"""The bad-input corpus, generated on the fly so that no binary of unknown origin is committed.

`corpus()` returns every case; `python -m tests.data.make_corpus OUTDIR` writes them out, one
file each plus `index.json`, for trying them by hand in a real Discord. See README.md here.
"""

from __future__ import annotations

import functools
import io
import json
import random
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

Kind = Literal["image", "mask", "slash-prompt", "modal-prompt", "prompt"]
Expect = Literal["ok", "refused"]

PHOTO_SIZE = (64, 48)
"""The size of the corpus's photos, and of the image every mask in it is drawn for."""
QUADRANTS = {
    "top_left": (220, 30, 30),
    "top_right": (30, 200, 30),
    "bottom_left": (30, 30, 220),
    "bottom_right": (240, 240, 240),
}
"""The photo's four colours; where they land after normalising shows it is upright."""
HOLE = (16, 12, 48, 36)
"""The region every usable mask marks as editable."""
PROMPT_TYPE = "text/plain; charset=utf-8"
# What Discord reports as an attachment's type: its guess from the file name.
_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect width="64" height="48"/></svg>'


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    filename: str
    content_type: str
    """What Discord would report: its guess from the file name."""
    expect: Expect
    why: str
    kind: Kind = "image"


def photo(size: tuple[int, int] = PHOTO_SIZE, mode: str = "RGB") -> Image.Image:
    """Four flat quadrants, so a turned or wrong frame is seen by sampling four pixels."""
    width, height = size
    image = Image.new("RGB", size)
    image.paste(QUADRANTS["top_left"], (0, 0, width // 2, height // 2))
    image.paste(QUADRANTS["top_right"], (width // 2, 0, width, height // 2))
    image.paste(QUADRANTS["bottom_left"], (0, height // 2, width // 2, height))
    image.paste(QUADRANTS["bottom_right"], (width // 2, height // 2, width, height))
    return image.convert(mode)


def encode(image: Image.Image, image_format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(
    width: int, height: int, bit_depth: int, color_type: int, idat: bytes, extra: bytes = b""
) -> bytes:
    """A PNG assembled chunk by chunk, for headers that Pillow would never write."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def png_header(side: int) -> bytes:
    """A PNG header claiming side×side pixels over a few bytes of data."""
    return raw_png(side, side, 8, 2, zlib.compress(bytes(64)))


@functools.cache
def png_bomb(side: int = 30_000) -> bytes:
    """A valid 1-bit PNG of side×side pixels, all black: about 110 kB that would decode to 112 MB."""
    row = bytes(1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return raw_png(side, side, 1, 0, idat)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims another size; only a decoder that trusts it suffers."""
    data = bytearray(encode(photo(), "JPEG"))
    start = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    data[start + 5 : start + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def noise(size: tuple[int, int] = (256, 192)) -> Image.Image:
    """Pixels that compress badly, so that a cut lands in the middle of the pixel data."""
    return Image.frombytes("RGB", size, random.Random(7).randbytes(size[0] * size[1] * 3))


def png_short_ihdr() -> bytes:
    """A PNG whose header chunk is one byte short (with a correct checksum)."""
    good = encode(photo(), "PNG")
    return good[:8] + _chunk(b"IHDR", good[16:28]) + good[33:]


def gif_zero_width_frame() -> bytes:
    """A GIF whose only frame is declared 0 pixels wide."""
    data = bytearray(encode(photo(), "GIF"))
    start = data.index(b"\x2c\x00\x00\x00\x00")  # image descriptor: marker, left, top, width, height
    data[start + 5 : start + 7] = struct.pack("<H", 0)
    return bytes(data)


def tga_without_palette() -> bytes:
    """A 16×16 colour-mapped TGA that has no colour map: not one of the four formats, and broken."""
    header = struct.pack("<BBBHHBHHHHBB", 0, 0, 1, 0, 0, 0, 0, 0, 16, 16, 8, 0)
    return header + bytes(256)


def png_16bit_rgb() -> bytes:
    """48-bit colour, which Pillow reads but never writes."""
    width, height = PHOTO_SIZE
    samples = photo().tobytes()
    stride = width * 3
    rows = (
        b"\x00" + b"".join(struct.pack(">H", value * 257) for value in samples[y * stride : (y + 1) * stride])
        for y in range(height)
    )
    return raw_png(width, height, 16, 2, zlib.compress(b"".join(rows)))


def png_16bit_grey() -> bytes:
    """Grey 30000 of 65535 (117 in 8 bits) on the left, white on the right."""
    image = Image.new("I;16", PHOTO_SIZE, 30_000)
    image.paste(65_535, (PHOTO_SIZE[0] // 2, 0, *PHOTO_SIZE))
    return encode(image, "PNG")


def png_text_bomb() -> bytes:
    """A small PNG whose compressed text chunk inflates to 2 MB, past Pillow's 1 MB limit."""
    small = encode(photo(), "PNG")
    text = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * 2 * 1024 * 1024, 9))
    return small[:33] + text + small[33:]


def turned_jpeg(orientation: int) -> bytes:
    """The photo stored sideways with the EXIF orientation that turns it upright again."""
    stored = {
        6: Image.Transpose.ROTATE_90,  # orientation 6 is undone by turning 90° clockwise
        8: Image.Transpose.ROTATE_270,  # orientation 8 is undone by turning 90° anticlockwise
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo().transpose(stored), "JPEG", quality=95, exif=exif.tobytes())


def animated(image_format: str) -> bytes:
    """Two frames: the photo, then solid black, so a wrong frame shows at once."""
    frames = [photo(), Image.new("RGB", PHOTO_SIZE)]
    return encode(frames[0], image_format, save_all=True, append_images=frames[1:], duration=100, loop=0)


def jpeg_with_second_picture() -> bytes:
    """A JPEG whose MPF segment adds a second picture, as Ultra HDR phone photos (gain map) and 3D
    cameras write; Pillow calls the format MPO, Discord and every viewer call it image/jpeg."""
    return encode(photo(), "MPO", save_all=True, append_images=[photo((32, 24))])


def palette_with_transparency() -> bytes:
    image = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    corner = image.getpixel((0, 0))
    return encode(image, "PNG", transparency=corner)


def bw_mask(size: tuple[int, int] = PHOTO_SIZE, mode: str = "L") -> Image.Image:
    """White (may change) over HOLE scaled to `size`, black elsewhere."""
    width, height = size
    box = (
        HOLE[0] * width // PHOTO_SIZE[0],
        HOLE[1] * height // PHOTO_SIZE[1],
        HOLE[2] * width // PHOTO_SIZE[0],
        HOLE[3] * height // PHOTO_SIZE[1],
    )
    image = Image.new("L", size, 0)
    image.paste(255, box)
    return image.convert(mode)


def alpha_mask(fill: tuple[int, int, int, int] = (0, 0, 0, 255)) -> Image.Image:
    """Opaque `fill` (may not change) with HOLE fully transparent (may change)."""
    image = Image.new("RGBA", PHOTO_SIZE, fill)
    image.paste((255, 255, 255, 0), HOLE)
    return image


def mask_16bit() -> bytes:
    """White 65535 over HOLE; the rest grey 30000, under half, so kept."""
    image = Image.new("I;16", PHOTO_SIZE, 30_000)
    image.paste(65_535, HOLE)
    return encode(image, "PNG")


def turned_mask() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(bw_mask().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())


def _case(name: str, data: bytes, filename: str, expect: Expect, why: str, kind: Kind = "image") -> Case:
    return Case(name, data, filename, _TYPES[Path(filename).suffix], expect, why, kind)


def _images() -> list[Case]:
    png = encode(noise(), "PNG")
    jpeg = encode(noise(), "JPEG", quality=90)
    return [
        _case("png_ok", encode(photo(), "PNG"), "photo.png", "ok", "a plain photo; sent as it is"),
        _case("jpeg_ok", encode(photo(), "JPEG"), "photo.jpg", "ok", "a plain photo; sent as it is"),
        _case("webp_ok", encode(photo(), "WEBP"), "photo.webp", "ok", "static WebP; sent as it is"),
        _case("png_truncated", png[: len(png) * 2 // 3], "cut.png", "refused", "the pixel data stops early"),
        _case("jpeg_truncated", jpeg[: len(jpeg) * 2 // 3], "cut.jpg", "refused", "the scan stops early"),
        _case("empty", b"", "empty.png", "refused", "zero bytes"),
        _case(
            "text_as_png", b"just some notes, not a picture\n", "notes.png", "refused", "text renamed .png"
        ),
        _case("svg", SVG, "drawing.svg", "refused", "vector images are not supported"),
        _case("tiff_as_png", encode(photo(), "TIFF"), "scan.png", "refused", "TIFF renamed .png"),
        _case("tga_as_png", tga_without_palette(), "old.png", "refused", "a broken TGA renamed .png"),
        _case("png_bomb", png_bomb(), "bomb.png", "refused", "110 kB that inflates to 30000×30000"),
        _case(
            "png_header_30000", png_header(30_000), "huge.png", "refused", "claims 30000×30000, has no data"
        ),
        _case("jpeg_sof_30000", jpeg_declaring(30_000, 30_000), "huge.jpg", "refused", "claims 30000×30000"),
        _case("jpeg_48mp", jpeg_declaring(8064, 6048), "phone.jpg", "refused", "8064×6048: over MAX_PIXELS"),
        _case(
            "png_wide",
            encode(Image.new("L", (20_000, 200)), "PNG"),
            "wide.png",
            "refused",
            "over MAX_INPUT_SIDE",
        ),
        _case("png_tiny", encode(photo((8, 8)), "PNG"), "tiny.png", "refused", "8×8: under MIN_INPUT_SIDE"),
        _case("png_text_bomb", png_text_bomb(), "chatty.png", "refused", "a text chunk inflating past 1 MB"),
        _case("png_short_ihdr", png_short_ihdr(), "short.png", "refused", "a 12-byte header chunk"),
        _case("gif_zero_width_frame", gif_zero_width_frame(), "zero.gif", "refused", "a frame 0 pixels wide"),
        _case(
            "ppm_header_only", b"P6 64 48", "notes.png", "refused", "the start of a PPM header, renamed .png"
        ),
        _case("gif_broken_second_frame", animated("GIF")[:-20], "cut.gif", "ok", "the first frame is whole"),
        _case("gif_animated", animated("GIF"), "anim.gif", "ok", "first frame, as PNG (OpenAI takes no GIF)"),
        _case("webp_animated", animated("WEBP"), "anim.webp", "ok", "first frame, as PNG, as for GIF"),
        _case("png_animated", animated("PNG"), "anim.png", "ok", "APNG: first frame, as PNG"),
        _case("jpeg_mpo", jpeg_with_second_picture(), "hdr.jpg", "ok", "the first picture, as a JPEG"),
        _case(
            "jpeg_cmyk", encode(photo(mode="CMYK"), "JPEG", quality=95), "cmyk.jpg", "ok", "to an RGB JPEG"
        ),
        _case("png_16bit_grey", png_16bit_grey(), "grey16.png", "ok", "scaled to 8-bit grey, not clipped"),
        _case("png_16bit_rgb", png_16bit_rgb(), "rgb16.png", "ok", "48-bit colour to an 8-bit RGB PNG"),
        _case("jpeg_exif_6", turned_jpeg(6), "turned6.jpg", "ok", "stored sideways; comes out upright"),
        _case("jpeg_exif_8", turned_jpeg(8), "turned8.jpg", "ok", "stored sideways; comes out upright"),
        _case("png_palette_alpha", palette_with_transparency(), "icon.png", "ok", "palette to an RGBA PNG"),
    ]


def _masks() -> list[Case]:
    def case(name: str, data: bytes, expect: Expect, why: str, filename: str = "mask.png") -> Case:
        return _case(name, data, filename, expect, why, "mask")

    return [
        case("mask_bw", encode(bw_mask(), "PNG"), "ok", "white = may change"),
        case("mask_alpha", encode(alpha_mask(), "PNG"), "ok", "transparent = may change"),
        case(
            "mask_opaque_rgba",
            encode(bw_mask(mode="RGBA"), "PNG"),
            "ok",
            "an alpha channel that is all opaque: read as black/white",
        ),
        case("mask_half_size", encode(bw_mask((32, 24)), "PNG"), "ok", "same shape, smaller: resized"),
        case("mask_double_size", encode(bw_mask((128, 96)), "PNG"), "ok", "same shape, larger: resized"),
        case(
            "mask_jpeg",
            encode(bw_mask(), "JPEG", quality=75),
            "ok",
            "lossy black/white: thresholded at 50%",
            "mask.jpg",
        ),
        case("mask_gif", encode(bw_mask(mode="P"), "GIF"), "ok", "palette black/white", "mask.gif"),
        case("mask_16bit", mask_16bit(), "ok", "16-bit grey: scaled, not clipped to all white"),
        case(
            "mask_exif_6",
            turned_mask(),
            "ok",
            "stored sideways with orientation 6: turned upright",
            "mask.jpg",
        ),
        case("mask_wrong_shape", encode(bw_mask((48, 48)), "PNG"), "refused", "square mask for a 4:3 image"),
        case(
            "mask_all_black",
            encode(Image.new("L", PHOTO_SIZE, 0), "PNG"),
            "refused",
            "marks nothing to change",
        ),
        case(
            "mask_all_white",
            encode(Image.new("L", PHOTO_SIZE, 255), "PNG"),
            "refused",
            "the whole image would change",
        ),
        case(
            "mask_all_transparent",
            encode(Image.new("RGBA", PHOTO_SIZE, (0, 0, 0, 0)), "PNG"),
            "refused",
            "the whole image would change",
        ),
        case("mask_empty", b"", "refused", "zero bytes"),
        case("mask_text", b"not a mask\n", "refused", "text renamed .png"),
        case("mask_truncated", encode(bw_mask(), "PNG")[:60], "refused", "the pixel data stops early"),
        case("mask_bomb", png_bomb(), "refused", "110 kB that inflates to 30000×30000"),
    ]


def _prompts() -> list[Case]:
    def case(name: str, text: str, expect: Expect, why: str, kind: Kind = "prompt") -> Case:
        return Case(name, text.encode(), "", PROMPT_TYPE, expect, why, kind)

    def sized(length: int) -> str:
        return ("make the sky stormy and add a lighthouse " * (length // 40 + 1))[:length]

    return [
        case("prompt_empty", "", "refused", "nothing to do"),
        case("prompt_whitespace", " \n\t  ", "refused", "nothing to do"),
        case("slash_6000", sized(6000), "ok", "at Discord's limit for a slash option", "slash-prompt"),
        case(
            "slash_6001",
            sized(6001),
            "refused",
            "over Discord's limit: Discord itself refuses it",
            "slash-prompt",
        ),
        case("modal_4000", sized(4000), "ok", "at Discord's limit for a modal text input", "modal-prompt"),
        case(
            "modal_4001",
            sized(4001),
            "refused",
            "over Discord's limit: Discord itself refuses it",
            "modal-prompt",
        ),
        case("prompt_20000", sized(20_000), "ok", "at the model's limit (the CLI has no Discord limit)"),
        case("prompt_20001", sized(20_001), "refused", "over the model's limit"),
        case("prompt_20000_padded", f"  \n{sized(20_000)}\n  ", "ok", "at the limit once trimmed"),
        case(
            "prompt_20000_emoji",
            "🎨" * 20_000,
            "ok",
            "20000 code points; 40000 UTF-16 units, in case a host counts those",
        ),
        case(
            "prompt_mentions",
            "hats on @everyone, <@123>, <@&456>, <@80351110224678912>, <@&41771983423143937> @here",
            "ok",
            "neutralised when shown",
        ),
        case(
            "prompt_controls",
            "make\x00 the sky\x1b[31m red\x07\r\nand\tbright\x85\x7f",
            "ok",
            "controls dropped by validation.clean_prompt; newline and tab kept",
        ),
        case(
            "prompt_only_controls",
            "\x00\x01\x1b\x7f\x9f",
            "refused",
            "empty once validation.clean_prompt drops them",
        ),
    ]


def corpus() -> list[Case]:
    return [*_images(), *_masks(), *_prompts()]


def write(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    index = []
    for case in corpus():
        suffix = Path(case.filename).suffix or ".txt"
        (outdir / f"{case.name}{suffix}").write_bytes(case.data)
        index.append(
            {
                "name": case.name,
                "file": f"{case.name}{suffix}",
                "upload_as": case.filename,
                "content_type": case.content_type,
                "kind": case.kind,
                "expect": case.expect,
                "why": case.why,
            }
        )
    (outdir / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.data.make_corpus OUTDIR")
    write(Path(sys.argv[1]))
