"""Pillow work: checking what a file really is, and fitting results under Discord's upload limit.

Everything here is CPU-bound and synchronous; callers run it on a pixel thread
(`memory.shared().run`) so that a 4K re-encode never stalls the gateway heartbeat.
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from PIL import ExifTags, Image, UnidentifiedImageError

from bot.pictures import encoders

# Larger than any input the model accepts (4096x4096 at most on some hosts), small enough that a
# decompression bomb is refused before it is decoded. It bounds each picture, and the memory
# budget (bot.pictures.memory) bounds them together: the costliest conversion of a picture this large,
# CMYK to RGB, holds 328 MB, within the default budget of 400 MB.
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Pillow's WebP decoder holds 16 bytes a pixel (libwebp's two RGBA canvases and a copy of the
# frame beside the picture), four times a PNG's or JPEG's, so WebPs get fewer pixels: at this
# many one decode takes 260 MB, within the default memory budget (see bot.pictures.image_costs).
WEBP_MAX_PIXELS = 16_000_000
# MPO is how Pillow names a JPEG carrying a second picture (phones' Ultra HDR gain maps): the
# first picture is an ordinary JPEG.
_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
# Only these decoders ever see a member's file: each other format Pillow tries is more code
# facing untrusted bytes.
_DECODERS = ("PNG", "JPEG", "WEBP", "GIF")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class ImageProblem(ValueError):
    """A file that cannot be used as an image; the message is written for the member."""


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int
    size: int

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.content_type]


# How Pillow reports malformed files (ValueError for truncated headers, oversized text chunks,
# frames outside the canvas, raw modes it cannot read).
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def _opened(data: bytes | Path) -> tuple[Image.Image, ImageInfo]:
    """The image with only its header read, once it is known to be one the bot may decode.

    Opening reads no pixels, so the size and the format are judged (and a decompression bomb
    refused) before any memory is spent on them; the caller closes the image.
    """
    size = data.stat().st_size if isinstance(data, Path) else len(data)
    if not size:
        raise ImageProblem("the file is empty")
    with contextlib.ExitStack() as on_failure:
        try:
            image = Image.open(data if isinstance(data, Path) else io.BytesIO(data), formats=_DECODERS)
            on_failure.callback(image.close)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageProblem(f"the image is too large ({width}×{height} pixels)")
            if image.format == "WEBP" and width * height > WEBP_MAX_PIXELS:
                raise ImageProblem(
                    f"the WebP image is too large to open ({width}×{height} pixels; PNG or JPEG can be larger)"
                )
            content_type = _FORMATS.get(image.format or "")
            if content_type is None:
                raise ImageProblem(
                    f"{image.format or 'this'} images are not supported; use PNG, JPEG, WebP or GIF"
                )
        except ImageProblem:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageProblem("the image is too large to open safely") from exc
        except _UNREADABLE as exc:
            raise ImageProblem("the file is not a readable PNG, JPEG, WebP or GIF image") from exc
        on_failure.pop_all()
    return image, ImageInfo(content_type, width, height, size)


def _decoded(data: bytes | Path) -> tuple[Image.Image, ImageInfo]:
    """The image opened and fully decoded, with its facts; the caller closes it.

    Decoding it all is the only sure test that the bytes are an image, so it is done once here
    and the pixels handed on, rather than decoded again by whoever needs them next.
    """
    image, info = _opened(data)
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        image.close()
        raise ImageProblem("the image is too large to open safely") from exc
    except _UNREADABLE as exc:
        image.close()
        raise ImageProblem("the file is not a readable PNG, JPEG, WebP or GIF image") from exc
    except BaseException:
        image.close()
        raise
    return image, info


@dataclass(frozen=True)
class Header:
    """What a file's header says, read without decoding a pixel: enough to price the decode."""

    info: ImageInfo
    format: str
    mode: str
    orientation: int | None
    """The EXIF orientation, 1 when there is none, None when only decoding would tell (a PNG's
    eXIf chunk may follow the pixels, and a malformed block is the decoder's to report)."""

    @property
    def may_turn(self) -> bool:
        """Whether the conversion could turn the picture, which holds a second copy of it."""
        return self.orientation is None or self.orientation in _TURNED

    @property
    def upright_size(self) -> tuple[int, int]:
        """The size once turned upright, as far as the header tells."""
        if self.orientation in (5, 6, 7, 8):
            return self.info.height, self.info.width
        return self.info.width, self.info.height


def header(data: bytes | Path) -> Header:
    """The header's facts; raises ImageProblem for what `_decoded` would refuse before decoding."""
    image, info = _opened(data)
    with image:
        return Header(info, image.format or "", image.mode, _orientation(image))


def _orientation(image: Image.Image) -> int | None:
    if image.format == "PNG" and "exif" not in image.info:
        return None
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (*_UNREADABLE, struct.error, EOFError, TypeError):
        return None


def inspect(data: bytes | Path) -> ImageInfo:
    """What the bytes (or the file) are, judged by decoding them, never by a file name."""
    image, info = _decoded(data)
    image.close()
    return info


def probe(data: bytes | Path, *, checked: PngCheck | None = None) -> ImageInfo | None:
    """What a PNG, JPEG or WebP is, from its header, when its structure shows it whole; None
    when only decoding (`inspect`) can tell. Raises ImageProblem for what `_decoded` would
    refuse before decoding.

    A full decode of a 1 MP PNG took 17 ms of CPU, half the pixel work of an edit, only to
    learn what the header already said. Truncation and damage in transit, the faults a file
    from Discord or a host really has, break the structure (a chunk's checksum, the end
    marker, the RIFF length), which this reads without inflating a pixel. What it cannot
    catch is a file made whole on purpose around undecodable pixels; the host decoding it
    refuses it, and the edit fails free.

    `checked`, for a file whose PNG bytes were checked as they were written (`PngCheck`),
    gives the structure's verdict, so only the header is read from the file.
    """
    if isinstance(data, Path):
        if checked is not None:
            image, info = _opened(data)  # the header only
            with image:
                if image.format == "PNG":
                    return info if checked.whole else None
        data = data.read_bytes()
    image, info = _opened(data)
    with image:
        return info if _whole(image, data) else None


def sendable(data: bytes) -> ImageInfo | None:
    """What an upload is when it can go to the host as it is (`normalize` would leave it
    unchanged), judged like `probe` without decoding; None when `normalize` must decide."""
    image, info = _opened(data)
    with image:
        if not _whole(image, data):
            return None
        # A PNG without EXIF before its pixels has none after them either: `_whole` refused that.
        orientation = _orientation(image) if image.format != "PNG" or "exif" in image.info else 1
        if orientation is None or _needs_conversion(image, data, orientation):
            return None
        return info


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _whole(image: Image.Image, data: bytes) -> bool:
    """Whether the file plainly ends where its format says it does, undamaged where checksums
    tell; a GIF, whose damage past the first frame only decoding finds, never is."""
    if image.format == "PNG":
        return _png_whole(data)
    if image.format in ("JPEG", "MPO"):
        return data.endswith(b"\xff\xd9")  # EOI; a camera's trailer after it is left to the decode
    if image.format == "WEBP":
        return data[8:12] == b"WEBP" and int.from_bytes(data[4:8], "little") + 8 == len(data)
    return False


def _png_whole(data: bytes) -> bool:
    """Every chunk complete with a right checksum, IEND last, and no EXIF after the pixels (an
    orientation Pillow reads only while decoding)."""
    check = PngCheck()
    check.feed(data)
    return check.whole


class PngCheck:
    """Whether a PNG is whole (`_png_whole`), judged as its bytes arrive, in blocks of any size:
    a result being downloaded is fed each block as it is written, and not read back and
    checksummed a second time."""

    _SIGNATURE, _HEADER, _DATA, _CRC, _ENDED = range(5)
    _NEEDS: ClassVar[dict[int, int]] = {_SIGNATURE: len(PNG_SIGNATURE), _HEADER: 8, _CRC: 4}

    def __init__(self) -> None:
        self._phase = self._SIGNATURE
        self._held = bytearray()  # a signature, chunk header or checksum not yet all here
        self._kind = b""
        self._left = 0  # bytes of the chunk's data still to come
        self._crc = 0
        self._pixels = False
        self._broken = False

    @property
    def whole(self) -> bool:
        return self._phase == self._ENDED and not self._broken

    def feed(self, block: bytes) -> None:
        view, at = memoryview(block), 0
        while at < len(view) and not self._broken:
            if self._phase == self._DATA:
                take = min(self._left, len(view) - at)
                self._crc = zlib.crc32(view[at : at + take], self._crc)
                self._left -= take
                at += take
                if not self._left:
                    self._phase = self._CRC
                continue
            if self._phase == self._ENDED:
                self._broken = True  # bytes after IEND
                return
            need = self._NEEDS[self._phase] - len(self._held)
            self._held += view[at : at + need]
            at += need
            if len(self._held) == self._NEEDS[self._phase]:
                self._step(bytes(self._held))
                self._held.clear()

    def _step(self, held: bytes) -> None:
        if self._phase == self._SIGNATURE:
            self._broken = held != PNG_SIGNATURE
            self._phase = self._HEADER
        elif self._phase == self._HEADER:
            self._left, self._kind = struct.unpack(">I4s", held)
            self._crc = zlib.crc32(self._kind)
            if self._kind == b"IDAT":
                self._pixels = True
            elif self._kind == b"eXIf" and self._pixels:
                self._broken = True
            self._phase = self._DATA if self._left else self._CRC
        elif int.from_bytes(held) != self._crc:
            self._broken = True
        elif self._kind == b"IEND":
            self._broken = not self._pixels
            self._phase = self._ENDED
        else:
            self._phase = self._HEADER


@dataclass(frozen=True)
class Fitted:
    data: bytes
    info: ImageInfo
    changed: bool
    """True when the image had to be re-encoded or shrunk to fit."""


def fit_under(data: bytes, limit: int, *, exif: bytes | None = None) -> Fitted:
    """The image unchanged if it fits, else re-encoded, else downscaled until it does.

    The order keeps quality where it can: first the same pixels in a smaller encoding (the
    highest quality of the codec's ladder that fits), and only then fewer pixels. A picture
    without transparency becomes a JPEG, ten times faster to encode than WebP and at least as
    close to the source (bench/fit.py measures both); one with transparency keeps it in WebP.
    Each size is predicted from a sample before the whole picture is encoded, so a quality
    that cannot fit costs a fraction of an encode, not a whole one. A re-encoding carries
    `exif` (the recipe, see bot.jobs.recipe), counted against the limit like the pixels.
    """
    opened, info = _decoded(data)
    with opened:
        if info.size <= limit:
            return Fitted(data, info, changed=False)
        image = _without_opaque_alpha(upright_8bit(opened))
        jpeg = image.mode not in ("RGBA", "LA") and limit >= encoders.JPEG_LEAST_LIMIT
        codec = encoders.JPEG if jpeg else encoders.WEBP
        # Past the codec's largest side or pixel count a picture is shrunk first: it is far over
        # any upload limit anyway.
        scale = min(
            codec.max_side / max(image.size), (codec.max_pixels / (image.width * image.height)) ** 0.5
        )
        if scale < 1:
            image = encoders.resized(image, scale)
        for quality in codec.qualities:
            estimate, encoded = encoders.attempt(image, codec, quality, exif, limit)
            if encoded is not None:
                return Fitted(
                    encoded, ImageInfo(codec.content_type, image.width, image.height, len(encoded)), True
                )
        scale = 1.0
        while True:
            # Always at least 5% smaller, so that a misjudged size cannot loop.
            scale *= min(1.0, (limit / estimate) ** 0.5) * 0.95
            smaller = encoders.resized(image, scale)
            estimate, encoded = encoders.attempt(smaller, codec, codec.shrink_quality, exif, limit)
            if encoded is None and smaller.size == (1, 1):
                encoded = codec.encode(smaller, codec.shrink_quality, exif, None)
            if encoded is not None:
                return Fitted(encoded, ImageInfo(codec.content_type, *smaller.size, len(encoded)), True)
            smaller.close()  # before the next is made, so that two never exist beside the picture


def fit_file(path: Path, limit: int, *, exif: bytes | None = None) -> Fitted:
    """`fit_under` on a kept file, read only once the work may start: read before, each result
    waiting for the memory budget held its bytes (15 MB at 4K) outside it."""
    return fit_under(path.read_bytes(), limit, exif=exif)


def _without_opaque_alpha(image: Image.Image) -> Image.Image:
    """The picture without its alpha channel when every pixel is opaque, which says nothing."""
    if image.mode not in ("RGBA", "LA") or image.getextrema()[-1][0] != 255:  # type: ignore[index]
        return image
    opaque = image.convert(image.mode[:-1])
    image.close()
    return opaque


# Pixel layouts that every host decodes the same way; anything else is converted before upload.
_READY_MODES = frozenset({"RGB", "RGBA", "L", "LA"})
# EXIF orientations other than "as stored" (1); hosts disagree on whether they honour them.
_TURNED = frozenset(range(2, 9))


def as_8bit(image: Image.Image) -> Image.Image:
    """The picture in RGB, RGBA, L or LA with 8-bit samples.

    Pillow's own conversion clips 16-bit grey to white instead of scaling it, so those are
    scaled here; every other layout (CMYK, palette, bilevel) converts as Pillow does.
    """
    if image.mode in _READY_MODES:
        return image
    if image.mode.startswith("I"):
        return _scaled_to_8bit(image)
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


# Pixels scaled at a time from 16-bit grey: the scaling goes through 32-bit values, which for a
# whole 40 MP picture at once held 320 MB beside it; in bands it holds 8 MB.
_BAND_PIXELS = 1 << 20


def _scaled_to_8bit(image: Image.Image) -> Image.Image:
    """16- or 32-bit grey scaled to 8 bits, a band of rows at a time."""
    out = Image.new("L", image.size)
    rows = max(1, _BAND_PIXELS // image.width)
    for top in range(0, image.height, rows):
        band = image.crop((0, top, image.width, min(top + rows, image.height)))
        # point() truncates, so +0.5 rounds to the nearest 8-bit value.
        out.paste(band.convert("I").point(lambda value: value / 257 + 0.5).convert("L"), (0, top))
    return out


_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright_8bit(opened: Image.Image) -> Image.Image:
    """The decoded picture upright (by its EXIF orientation) in 8-bit RGB(A), L or LA.

    Converting comes before turning so that the original is let go (closed here) before the
    turned copy is made: at most two copies of the picture exist at once, where
    `ImageOps.exif_transpose` then `as_8bit` held three (it copies even a picture it does not
    turn). The result may be `opened` itself, which then stays open for the caller to close.
    """
    turn = _TURNS.get(opened.getexif().get(ExifTags.Base.Orientation, 1))
    pixels = as_8bit(opened)
    if pixels is not opened:
        opened.close()
    if turn is None:
        return pixels
    turned = pixels.transpose(turn)
    pixels.close()
    return turned


@dataclass(frozen=True)
class Normalized:
    source: ImageInfo
    """What the member's file is."""
    info: ImageInfo
    """What the host will receive: the original's facts when `data` is None, else the new file's."""
    data: bytes | None
    """The re-encoded upload, or None when the original (and so its Discord URL) can go as it is."""


def _needs_conversion(opened: Image.Image, data: bytes, orientation: int) -> bool:
    """Whether a PNG, JPEG or WebP (GIFs always convert) is in a form some host could misread."""
    # A PNG's bit depth is byte 24: the signature, then the IHDR chunk's length, type and size.
    sixteen_bit = opened.format == "PNG" and data[24] == 16
    turned = orientation in _TURNED
    animated = bool(getattr(opened, "is_animated", False))
    return sixteen_bit or turned or animated or opened.mode not in _READY_MODES


def normalize(data: bytes) -> Normalized:
    """The upload in a form every host reads the same way: upright, one frame, 8-bit RGB(A) or grey.

    Hosts differ on EXIF orientation, CMYK, 16-bit samples, palettes and animation (OpenAI takes
    no GIF at all), so an image any of them could misread is re-encoded: JPEG stays JPEG, the
    rest become PNG. The EXIF block is dropped with the orientation, which also drops GPS tags.
    A CMYK file's colour profile describes ink, not the converted pixels, so it is not carried over.
    The file is decoded once: the check, the EXIF read and the conversion share the pixels, and
    the decoded original is let go as soon as the converted pixels exist.
    """
    opened, info = _decoded(data)
    with opened:
        try:
            orientation = opened.getexif().get(ExifTags.Base.Orientation, 1)
            if info.content_type != "image/gif" and not _needs_conversion(opened, data, orientation):
                return Normalized(info, info, None)
            profile = None if opened.mode == "CMYK" else opened.info.get("icc_profile")
            pixels = upright_8bit(opened)
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            # Damage past the first frame, which the decode never reads: fuzzing found GIF's
            # frame-count probe raising IndexError (hence GIFs skip it). Escaping, it would
            # strand the job mid-submit.
            raise ImageProblem("the file is partly damaged") from exc
        buffer = io.BytesIO()
        if info.content_type == "image/jpeg":
            pixels.save(buffer, "JPEG", quality=95, icc_profile=profile)
        else:
            pixels.save(buffer, "PNG", icc_profile=profile)
    encoded = buffer.getvalue()
    content_type = "image/jpeg" if info.content_type == "image/jpeg" else "image/png"
    return Normalized(info, ImageInfo(content_type, pixels.width, pixels.height, len(encoded)), encoded)
