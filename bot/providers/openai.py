"""OpenAI's own Images edits endpoint: one synchronous multipart request carries the whole edit.

Facts from the API reference and the official SDK (see shared/providers.md, section 2):
`POST /v1/images/edits` takes `image[]` file parts (up to 16, each under 50 MB), an optional
`mask` PNG whose fully transparent pixels mark where to edit (same size as the first image,
under 4 MB), and `model`, `prompt`, `n`, `size`, `quality`, `output_format`. The image-generation
guide adds that the image to edit and the mask "must be of the same format and size", so with a
mask the first image goes as an upright PNG of the mask's size. GPT image models always answer
with base64 images and a token `usage` block, priced at the configured `token_prices`. Errors
are `{"error": {"message", "type", "param", "code"}}`.

There is no job to look up later, so `submit` performs the edit and keeps the result in this
process under a run id of our own; `status` and `result` then answer from memory. A restart
while the request is in flight (or before the job runner has read the result) loses the run:
OpenAI cannot be asked for it again, so `status` reports it failed and the job runner fails the
job, which releases its credits; the member may Retry. The owner may still be billed by OpenAI
for that lost edit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image, ImageOps

from bot.pictures import image_costs, images, masks, memory
from bot.pictures.files import DownloadError, FileStore
from bot.pictures.sizes import IMAGE_SIZES, RESOLUTIONS
from bot.providers.base import (
    AuthFailed,
    EditRequest,
    EditResult,
    ImageRef,
    InvalidRequest,
    OutputImage,
    RateLimited,
    Run,
    RunFailed,
    RunState,
    RunStatus,
    Unavailable,
)
from bot.providers.http import request_json
from bot.providers.payloads import token_usd_micros
from bot.providers.settings import HostSettings, OpenAISettings, TokenPrices
from bot.providers.spec import HostSpec

# The three sizes every GPT image model accepts (plus auto), used at 1K; `EditRequest.dimensions`
# asks gpt-image-2 for others.
SIZES = {
    "auto": "auto",
    "square": "1024x1024",
    "square_hd": "1024x1024",
    "landscape_4_3": "1536x1024",
    "landscape_16_9": "1536x1024",
    "portrait_4_3": "1024x1536",
    "portrait_16_9": "1024x1536",
}
MAX_IMAGE_BYTES = 50_000_000
MAX_MASK_BYTES = 4_000_000
_CONTENT_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
# Finished edits wait here until the job runner reads them, which it does right after submit
# returns; the cap only bounds memory if nobody ever asks (each entry can hold several MB).
_KEEP_RESULTS = 16


def _parse_error(body: Any) -> tuple[str | None, str | None]:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    code = error.get("code") or error.get("type")
    message = error.get("message")
    return (str(code) if code else None, str(message) if message else None)


def _masked_pair(first_image: bytes, mask: bytes) -> tuple[bytes, bytes]:
    """The first image and its mask as OpenAI's guide wants them: both PNG and the same size.

    The first image goes upright (its EXIF orientation applied), since the member drew the mask
    on the picture as shown; the mask follows at that size, transparent where the edit may
    change pixels. `bot.pictures.masks` reads either convention members draw.
    """
    try:
        images.header(first_image)  # refuses what is unsafe to decode before decoding it
        with Image.open(io.BytesIO(first_image)) as opened:
            upright = images.as_8bit(ImageOps.exif_transpose(opened))
        buffer = io.BytesIO()
        upright.save(buffer, "PNG")
        return buffer.getvalue(), masks.to_alpha_mask(mask, upright.size)
    except (OSError, ValueError) as exc:  # ImageProblem is a ValueError
        raise InvalidRequest(f"the image and its mask cannot be paired: {exc}", host="openai") from exc


def _dimensions(size: Any) -> tuple[int | None, int | None]:
    if isinstance(size, str) and "x" in size:
        width, _, height = size.partition("x")
        if width.isascii() and height.isascii() and width.isdigit() and height.isdigit():
            return int(width), int(height)
    return None, None


def _edit_result(reply: Any, prices: TokenPrices, duration_ms: int | None = None) -> EditResult:
    if not isinstance(reply, dict) or not isinstance(reply.get("data"), list):
        raise Unavailable("OpenAI sent a reply without a data list", host="openai")
    output_format = reply.get("output_format") if isinstance(reply.get("output_format"), str) else "png"
    width, height = _dimensions(reply.get("size"))
    images: list[OutputImage] = []
    for entry in reply["data"]:
        encoded = entry.get("b64_json") if isinstance(entry, dict) else None
        if not isinstance(encoded, str):
            continue
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Unavailable("OpenAI sent an image that is not valid base64", host="openai") from exc
        images.append(
            OutputImage(data=data, content_type=f"image/{output_format}", width=width, height=height)
        )
    if not images:
        raise RunFailed("OpenAI finished without any image", host="openai")
    usd_micros = token_usd_micros(reply.get("usage"), prices)
    return EditResult(images=images, duration_ms=duration_ms, usd_micros=usd_micros)


def _size(request: EditRequest, free_sizes: bool) -> str:
    """gpt-image-2 takes any WxH within its limits, which `bot.pictures.sizes` keeps to, so the exact size
    goes as it is; older models take only the fixed sizes."""
    if request.dimensions is None or not free_sizes:
        return SIZES.get(request.image_size, "auto")
    width, height = request.dimensions
    return f"{width}x{height}"


class OpenAIProvider:
    name = "openai"
    # Every choice maps to a valid size: an exact one on gpt-image-2, else the SIZES table.
    image_sizes = frozenset(IMAGE_SIZES)

    def __init__(self, settings: HostSettings, session: aiohttp.ClientSession) -> None:
        if not isinstance(settings, OpenAISettings):
            raise TypeError("OpenAIProvider needs the providers.openai settings")
        if settings.api_key is None:
            raise ValueError("providers.openai.api_key is required")
        # Free sizes (multiples of 16 up to 3840) came with gpt-image-2; older models take
        # only the three fixed sizes.
        self._free_sizes = settings.model.startswith("gpt-image-2")
        self.resolutions = frozenset(RESOLUTIONS) if self._free_sizes else frozenset({"1K"})
        self._prices = settings.token_prices
        self._settings = settings
        self._session = session
        self._headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
        # Only its capped, streaming download is used; it never touches the disk.
        self._downloads = FileStore(Path())
        self._finished: OrderedDict[str, RunState] = OrderedDict()

    async def _bytes(self, image: ImageRef) -> bytes:
        if image.data is not None:
            data = image.data
        elif image.url is not None:
            try:
                data = await self._downloads.download(
                    self._session,
                    image.url,
                    max_bytes=MAX_IMAGE_BYTES,
                    timeout=self._settings.request_timeout,
                )
            except DownloadError as exc:
                # The same URL is what every other host would need, so this is not OpenAI's outage.
                raise InvalidRequest(
                    f"image {image.filename} could not be fetched: {exc}", host=self.name
                ) from exc
        else:
            raise InvalidRequest(f"image {image.filename} has neither a URL nor bytes", host=self.name)
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidRequest(f"image {image.filename} is larger than OpenAI accepts", host=self.name)
        return data

    async def _form(self, request: EditRequest) -> aiohttp.FormData:
        datas = await asyncio.gather(*(self._bytes(image) for image in request.images))
        parts = [
            (image.filename, image.content_type, data)
            for image, data in zip(request.images, datas, strict=True)
        ]
        mask: bytes | None = None
        if request.mask is not None:
            first, alpha = await memory.shared().run(
                image_costs.masked_pair_cost, _masked_pair, datas[0], await self._bytes(request.mask)
            )
            if len(alpha) > MAX_MASK_BYTES:
                raise InvalidRequest("the mask is larger than the 4 MB OpenAI accepts", host=self.name)
            parts[0] = (f"{Path(parts[0][0]).stem}.png", "image/png", first)
            mask = alpha
        form = aiohttp.FormData()
        form.add_field("model", self._settings.model)
        form.add_field("prompt", request.prompt)
        form.add_field("n", str(request.count))
        form.add_field("size", _size(request, self._free_sizes))
        form.add_field("quality", request.quality)
        form.add_field("output_format", request.output_format)
        for filename, content_type, data in parts:
            form.add_field("image[]", data, filename=filename, content_type=content_type)
        if mask is not None:
            form.add_field("mask", mask, filename="mask.png", content_type="image/png")
        return form

    async def submit(self, request: EditRequest, *, callback_url: str | None = None) -> Run:
        """The whole edit; `callback_url` is ignored because OpenAI answers on this request."""
        if not request.images:
            raise InvalidRequest("an edit needs at least one image", host=self.name)
        form = await self._form(request)
        started = time.monotonic()
        try:
            reply = await request_json(
                self._session,
                "POST",
                f"{self._settings.base_url}/v1/images/edits",
                host=self.name,
                parse_error=_parse_error,
                timeout=self._settings.request_timeout,
                headers=self._headers,
                data=form,
                content_codes=_CONTENT_CODES,
            )
        except RateLimited as exc:
            if exc.code == "insufficient_quota":
                # A 429 by status, but it is the owner's billing: waiting will not help.
                raise AuthFailed(exc.message, host=self.name, code=exc.code) from exc
            raise
        elapsed_ms = round((time.monotonic() - started) * 1000)
        state = RunState(RunStatus.SUCCEEDED, result=_edit_result(reply, self._prices, elapsed_ms))
        run_id = f"openai-{request.job_id}-{uuid.uuid4().hex[:12]}"
        self._finished[run_id] = state
        while len(self._finished) > _KEEP_RESULTS:
            self._finished.popitem(last=False)
        return Run(self.name, run_id)

    async def status(self, run: Run) -> RunState:
        state = self._finished.get(run.run_id)
        if state is None:
            return RunState(
                RunStatus.FAILED,
                error=RunFailed(
                    "the edit's result was lost (the bot restarted); retry the edit",
                    host=self.name,
                    code="lost_on_restart",
                ),
            )
        return state

    async def result(self, run: Run) -> EditResult:
        state = await self.status(run)
        if state.error is not None:
            raise state.error
        assert state.result is not None  # a kept run always succeeded
        return state.result

    async def cancel(self, run: Run) -> bool:
        """Nothing runs at OpenAI once `submit` has returned, so there is nothing to stop."""
        return False

    async def close(self) -> None:
        self._finished.clear()


# OpenAI answers on the request itself: no callbacks.
SPEC = HostSpec("openai", OpenAIProvider)
