"""The recipe a result file carries in its own metadata, so a downloaded picture can be traced
and re-created: prompt, edit number, the edit it continues, quality, size and host.

PNG gets text chunks (`Description` for the prompt, `retouch` for the whole recipe as JSON);
JPEG and WebP get EXIF (`ImageDescription`, and the JSON in `UserComment`). The chunks are
spliced into the file as it is, never by re-encoding it: a 4K result is not decoded again and
loses nothing.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import asdict, dataclass
from typing import BinaryIO

from PIL import ExifTags, Image

from bot.pictures.images import PNG_SIGNATURE
from storage.jobs import Job

KEY = "retouch"
SOFTWARE = "Retouch"
_EXIF_PREFIX = b"Exif\x00\x00"
_ASCII_COMMENT = b"ASCII\x00\x00\x00"  # UserComment's character code (EXIF 2.3, 4.6.5)


@dataclass(frozen=True)
class Recipe:
    prompt: str
    edit: int
    continues: int | None
    quality: str
    size: str
    resolution: str
    host: str | None

    def to_json(self) -> str:
        # ASCII escapes keep the JSON valid in EXIF's ASCII-only fields.
        return json.dumps(asdict(self), ensure_ascii=True, separators=(",", ":"))


def of(job: Job) -> Recipe:
    options = job.options
    return Recipe(
        prompt=job.prompt,
        edit=job.id,
        continues=job.parent_id,
        quality=options.quality,
        size=options.image_size,
        resolution=options.resolution,
        host=job.provider,
    )


def exif(recipe: Recipe, base: bytes | None = None) -> bytes:
    """An EXIF block (with its `Exif\\0\\0` header) holding the recipe, over `base`'s tags if any."""
    tags = Image.Exif()
    if base:
        tags.load(base)
    tags[ExifTags.Base.ImageDescription] = f"Retouch edit #{recipe.edit}"
    tags[ExifTags.Base.Software] = SOFTWARE
    ifd = tags.get_ifd(ExifTags.IFD.Exif)
    ifd[ExifTags.Base.UserComment] = _ASCII_COMMENT + recipe.to_json().encode()
    return tags.tobytes()


def stamp(data: bytes, recipe: Recipe) -> bytes:
    """The file with the recipe in its metadata; a format this does not know is left as it is."""
    if data.startswith(PNG_SIGNATURE):
        return _png(data, recipe)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data, recipe)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data, recipe)
    return data


def stamp_end(handle: BinaryIO, recipe: Recipe) -> bool:
    """Stamp, in place, a PNG open for reading and writing that ends with its IEND chunk, as
    `stamp` would (the same bytes): the recipe's chunks are written over that chunk, and it after
    them. Nothing before it is read, copied or checksummed again; a 1 MP result was read, copied
    twice and written whole to add a few hundred bytes. False, the file untouched, for anything
    else (JPEG and WebP carry the recipe near their start), which `stamp` must change whole."""
    handle.seek(0)
    if handle.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
        return False
    end = handle.seek(0, os.SEEK_END) - len(_IEND)
    if end < len(PNG_SIGNATURE):
        return False
    handle.seek(end)
    if handle.read(len(_IEND)) != _IEND:
        return False
    handle.seek(end)
    handle.write(_png_chunks(recipe) + _IEND)
    return True


def stamp_whole(handle: BinaryIO, recipe: Recipe) -> None:
    """`stamp` over a file open for reading and writing, changed in place: it holds the file and
    its stamped copy at once, where `stamp_end` holds neither."""
    handle.seek(0)
    data = handle.read()
    stamped = stamp(data, recipe)
    if stamped is not data:
        handle.seek(0)
        handle.write(stamped)
        handle.truncate()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


_IEND = _png_chunk(b"IEND", b"")


def _itxt(keyword: str, value: str) -> bytes:
    # keyword, no compression, no language tag, no translated keyword, UTF-8 text
    return _png_chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + value.encode())


def _png_chunks(recipe: Recipe) -> bytes:
    return (
        _png_chunk(b"tEXt", b"Software\x00" + SOFTWARE.encode())
        + _itxt("Description", recipe.prompt)
        + _itxt(KEY, recipe.to_json())
    )


def _png(data: bytes, recipe: Recipe) -> bytes:
    end = data.rfind(b"IEND") - 4  # the IEND chunk's length field
    if end < 8:
        return data
    return data[:end] + _png_chunks(recipe) + data[end:]


def _jpeg(data: bytes, recipe: Recipe) -> bytes:
    """APP1 Exif after SOI (after a JFIF APP0, which must come first), in place of any Exif
    segment the host wrote, whose tags it keeps."""
    position, segments = 2, []
    while position + 4 <= len(data) and data[position] == 0xFF and 0xE0 <= data[position + 1] <= 0xEF:
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        segments.append(data[position : position + 2 + length])
        position += 2 + length
    found = [segment for segment in segments if segment[1] == 0xE1 and segment[4:10] == _EXIF_PREFIX]
    others = [segment for segment in segments if segment not in found]
    payload = exif(recipe, found[0][4:] if found else None)
    if len(payload) + 2 > 0xFFFF:
        return data
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    lead = 1 if others and others[0][1] == 0xE0 else 0
    return data[:2] + b"".join([*others[:lead], app1, *others[lead:]]) + data[position:]


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def _webp(data: bytes, recipe: Recipe) -> bytes:
    """An extended (VP8X) WebP with an EXIF chunk; a simple one is given the VP8X header."""
    chunks: list[tuple[bytes, bytes]] = []
    position = 12
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        size = struct.unpack("<I", data[position + 4 : position + 8])[0]
        chunks.append((kind, data[position + 8 : position + 8 + size]))
        position += 8 + size + (size % 2)
    base = next((body for kind, body in chunks if kind == b"EXIF"), None)
    chunks = [(kind, body) for kind, body in chunks if kind != b"EXIF"]
    if not chunks:
        return data
    if chunks[0][0] == b"VP8X":
        header = bytearray(chunks[0][1])
        header[0] |= 0x08
        chunks[0] = (b"VP8X", bytes(header))
    else:
        with Image.open(io.BytesIO(data)) as image:
            (width, height), alpha = image.size, image.mode == "RGBA"
        flags = 0x08 | (0x10 if alpha else 0)
        size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", bytes([flags, 0, 0, 0]) + size))
    chunks.append((b"EXIF", exif(recipe, base).removeprefix(_EXIF_PREFIX)))
    body = b"WEBP" + b"".join(_riff_chunk(kind, body) for kind, body in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body
