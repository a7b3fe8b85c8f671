"""An in-process fake of OpenAI's ``POST /v1/images/edits`` for GPT image models.

It follows the API reference and the official SDK (see the shared research notes, providers.md, section 2):
a multipart body with ``image[]`` parts (1-16, each under 50 MB), an optional ``mask`` (a PNG
with an alpha channel under 4 MB, of the same format and size as the first image, as the
image-generation guide says: a JPEG or WebP first image with a PNG mask is refused with the
documented 400 ``invalid_request_error`` on ``param: "mask"``), ``model``, ``prompt``, ``n``
(1-10), ``size`` (1024x1024 | 1536x1024 | 1024x1536 | auto, or for gpt-image-2 any ``WxH``
within the model's limits), ``quality``, ``output_format``;
``Authorization: Bearer``. The answer comes on the same request after ``delay`` (or when
released while ``hold`` is set): ``{created, data: [{b64_json}], output_format, quality, size,
usage}``. Errors are ``{"error": {message, type, param, code}}``: 400 invalid input, 400
``moderation_blocked`` when the prompt contains ``blocked_word`` or ``moderate`` is set, 401
bad key, 429 ``rate_limit_exceeded`` (with Retry-After) or ``insufficient_quota`` when
``out_of_quota`` is set.

The "edit" inverts the first image; every output is that picture, stretched to a ``WxH`` size
when one was asked for and otherwise at the first image's size.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image, ImageOps, UnidentifiedImageError

from tests.fakes.fal import LoopbackFake, custom_size_problem, json_response

__all__ = ["FakeOpenAI", "ReceivedEdit"]

MODELS = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "gpt-image-2-2026-04-21")
SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
QUALITIES = ("low", "medium", "high", "auto", "standard")
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MAX_IMAGE_BYTES = 50_000_000
MAX_MASK_BYTES = 4_000_000
# Reported per request: (text in, image in per input image, image out per output image).
USAGE = (50, 300, 1500)


@dataclass
class ReceivedEdit:
    """What one accepted request carried, for assertions."""

    fields: dict[str, str]
    images: list[tuple[str, str, bytes]] = field(default_factory=list)
    mask: bytes | None = None


def _error(status: int, message: str, kind: str, code: str | None, param: str | None = None) -> web.Response:
    return json_response(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def _parts(content_type: str, raw: bytes) -> list[tuple[str, str | None, str, bytes]]:
    """(name, filename, content type, payload) of each multipart part."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            parts.append((name, part.get_filename(), part.get_content_type(), payload))
    return parts


def _custom_size(size: str) -> tuple[int, int] | None:
    """The width and height of a ``WxH`` size that is not one of the fixed ``SIZES``."""
    match = re.fullmatch(r"([0-9]+)x([0-9]+)", size)
    if size in SIZES or match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def _open(data: bytes) -> Image.Image | None:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError):
        return None
    return image


class FakeOpenAI(LoopbackFake):
    """The fake Images edits endpoint (see the module docstring)."""

    def __init__(self, *, api_key: str = "sk-test-key", delay: float = 0.0) -> None:
        super().__init__(api_key=api_key, delay=delay)
        self.edits: list[ReceivedEdit] = []
        self.blocked_word = "forbidden"
        self.moderate = False
        self.out_of_quota = False
        self.empty_output = False
        self._counter = 0

    def error_body(self, status: int, message: str) -> Any:
        kind = {429: "rate_limit_error", 401: "invalid_request_error"}.get(status, "server_error")
        code = "rate_limit_exceeded" if status == 429 else None
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    async def route(self, request: web.Request, raw: bytes) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
        if request.method != "POST" or request.path != "/v1/images/edits":
            return _error(
                404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error", None
            )
        if self.out_of_quota:
            return _error(429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota")
        if not request.content_type.startswith("multipart/form-data"):
            return _error(400, "Expected a multipart body", "invalid_request_error", None)
        edit = ReceivedEdit(fields={})
        for name, filename, content_type, payload in _parts(request.headers["Content-Type"], raw):
            if name == "image[]":
                edit.images.append((filename or "", content_type, payload))
            elif name == "mask":
                edit.mask = payload
            else:
                edit.fields[name] = payload.decode()
        problem = self._problem(edit)
        if problem is not None:
            return _error(400, problem[1], "invalid_request_error", None, problem[0])
        if self.moderate or self.blocked_word in edit.fields["prompt"]:
            return _error(
                400,
                "Your request was rejected by the safety system.",
                "image_generation_user_error",
                "moderation_blocked",
            )
        self._counter += 1
        await self.work(f"edit-{self._counter}")
        self.edits.append(edit)
        return json_response(200, self._reply(edit))

    def _problem(self, edit: ReceivedEdit) -> tuple[str, str] | None:
        """(param, message) of the first thing wrong with the request."""
        fields = edit.fields
        if fields.get("model") not in MODELS:
            return "model", f"Invalid model {fields.get('model')!r}"
        if not fields.get("prompt", "").strip() or len(fields["prompt"]) > 32_000:
            return "prompt", "prompt must be 1-32000 characters"
        if not 1 <= len(edit.images) <= 16:
            return "image", "between 1 and 16 images are required"
        for filename, _, data in edit.images:
            if len(data) >= MAX_IMAGE_BYTES or _open(data) is None:
                return "image", f"{filename} is not a valid image under 50 MB"
        if not fields.get("n", "1").isdigit() or not 1 <= int(fields.get("n", "1")) <= 10:
            return "n", "n must be between 1 and 10"
        size = fields.get("size", "auto")
        custom = _custom_size(size)
        if custom is not None and fields["model"].startswith("gpt-image-2"):
            problem = custom_size_problem(*custom)
            if problem is not None:
                return "size", f"Invalid size {size!r}: {problem}"
        elif size not in SIZES:
            return "size", f"Invalid size {size!r}"
        if fields.get("quality", "auto") not in QUALITIES:
            return "quality", f"Invalid quality {fields.get('quality')!r}"
        if fields.get("output_format", "png") not in FORMATS:
            return "output_format", f"Invalid output_format {fields.get('output_format')!r}"
        if edit.mask is not None:
            mask = _open(edit.mask)
            first = _open(edit.images[0][2])
            if (
                mask is None
                or mask.format != "PNG"
                or "A" not in mask.getbands()
                or len(edit.mask) >= MAX_MASK_BYTES
            ):
                return "mask", "mask must be a PNG with an alpha channel under 4 MB"
            if first is not None and (mask.size, mask.format) != (first.size, first.format):
                return "mask", "The image to edit and the mask must be of the same format and size."
        return None

    def _reply(self, edit: ReceivedEdit) -> dict[str, Any]:
        fmt = edit.fields.get("output_format", "png")
        source = _open(edit.images[0][2])
        assert source is not None
        picture = ImageOps.invert(source.convert("RGB"))
        custom = _custom_size(edit.fields.get("size", "auto"))
        if custom is not None:
            # Nearest-neighbour keeps a 4K result as cheap to make as the small input is.
            picture = picture.resize(custom, Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        picture.save(buffer, FORMATS[fmt])
        count = 0 if self.empty_output else int(edit.fields.get("n", "1"))
        text_in, image_in, image_out = USAGE
        return {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(buffer.getvalue()).decode()} for _ in range(count)],
            "background": "opaque",
            "output_format": fmt,
            "quality": edit.fields.get("quality", "auto"),
            "size": f"{picture.width}x{picture.height}",
            "usage": {
                "input_tokens": text_in + image_in * len(edit.images),
                "input_tokens_details": {"text_tokens": text_in, "image_tokens": image_in * len(edit.images)},
                "output_tokens": image_out * count,
                "total_tokens": text_in + image_in * len(edit.images) + image_out * count,
            },
        }
