"""fal's queue: submit a request, then follow the URLs it hands back (or take its webhook).

Facts from fal's queue docs and official client (see shared/providers.md, section 1):
`POST {queue}/{model}` with the model input at the top level and `Authorization: Key ...`,
optionally `?fal_webhook=<url>`; the reply carries `request_id`, `status_url`, `response_url`
and `cancel_url`. Those URLs name the app without the endpoint's sub-path, so they are kept in
`Run.data` and used as given, never rebuilt. Status is IN_QUEUE (with `queue_position`),
IN_PROGRESS or COMPLETED, where a set `error`/`error_type` means the run failed. Model errors
are `{"detail": [{"loc", "msg", "type"}]}` and infrastructure errors `{"detail": "...",
"error_type": "..."}`; the `type`, never the message, says what happened.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.pictures import sizes
from bot.pictures.sizes import IMAGE_SIZES, RESOLUTIONS
from bot.providers.base import (
    ContentRejected,
    EditRequest,
    EditResult,
    ErrorKind,
    ImageRef,
    InvalidRequest,
    ProviderError,
    Run,
    RunFailed,
    RunState,
    RunStatus,
    Unavailable,
    url_or_data_uri,
)
from bot.providers.callbacks import json_object, required_id
from bot.providers.http import JsonApi
from bot.providers.payloads import MASK_FIELD, int_or_none, nsfw_flag, output_images, token_usd_micros
from bot.providers.settings import HostSettings, TokenPrices
from bot.providers.spec import HostSpec

log = logging.getLogger(__name__)

CONTENT_CODES = frozenset({"content_policy_violation"})
# fal's model page for openai/gpt-image-2/edit: text in $5/M, image in $8/M, text out $10/M,
# image out $30/M. Its documented output lists only `images[]`; a `usage` block, which other
# fal clients read, is priced when present, else spend falls back to the per-image estimate.
FAL_PRICES = TokenPrices(text_in=5, image_in=8, text_out=10, image_out=30)
_URL_KEYS = ("status_url", "response_url", "cancel_url")
_CANCELLED = ("OK", "CANCELLATION_REQUESTED")


def parse_error(body: Any) -> tuple[str | None, str | None]:
    """fal's error body as (type, message); a content-policy entry wins over the others."""
    if not isinstance(body, dict):
        return None, None
    detail = body.get("detail")
    error_type = body.get("error_type")
    code = str(error_type) if error_type else None
    message: str | None = None
    if isinstance(detail, list):
        entries = [entry for entry in detail if isinstance(entry, dict)]
        types = [str(entry["type"]) for entry in entries if entry.get("type")]
        if types:
            code = next((kind for kind in types if kind in CONTENT_CODES), types[0])
        message = "; ".join(str(entry["msg"]) for entry in entries if entry.get("msg")) or None
    elif isinstance(detail, str) and detail:
        message = detail
    return code, message


def run_error(body: Any, fallback: str) -> ProviderError:
    """The error of a run fal has already finished: content, input, or a failure of its own."""
    code, message = parse_error(body)
    text = message or fallback
    if code is not None and code in CONTENT_CODES:
        return ContentRejected(text, host="fal", code=code)
    if isinstance(body, dict) and isinstance(body.get("detail"), list):
        return InvalidRequest(text, host="fal", code=code)
    return RunFailed(text, host="fal", code=code)


def output_state(payload: Any, duration_ms: int | None = None) -> RunState:
    """A finished fal model output (result body or webhook payload) as a RunState."""
    images = output_images(payload)
    if not images or not isinstance(payload, dict):
        return RunState(RunStatus.FAILED, error=RunFailed("fal finished without any image", host="fal"))
    result = EditResult(
        images=images,
        seed=int_or_none(payload.get("seed")),
        duration_ms=duration_ms,
        nsfw=nsfw_flag(payload),
        usd_micros=token_usd_micros(payload.get("usage"), FAL_PRICES),
    )
    return RunState(RunStatus.SUCCEEDED, result=result)


def _image_url(image: ImageRef) -> str:
    """fal fetches URLs itself and also accepts data URIs, so bytes travel inline."""
    return url_or_data_uri(image, "fal")


def _image_size(request: EditRequest) -> str | dict[str, int]:
    """Always the exact size in fal's documented `{width, height}` form, never a preset name:
    fal's `square` (512x512) and 16:9 presets (1024x576) are under gpt-image-2's minimum.

    Only "auto" without a known first-image shape (the command-line edit) is left to the model.
    """
    if request.dimensions is not None:
        width, height = request.dimensions
    elif request.image_size == "auto":
        return "auto"
    else:
        try:
            width, height = sizes.dimensions(request.image_size, request.resolution, None)
        except ValueError as exc:
            raise InvalidRequest(str(exc), host="fal") from exc
    return {"width": width, "height": height}


def _duration_ms(status: dict[str, Any]) -> int | None:
    metrics = status.get("metrics")
    seconds = metrics.get("inference_time") if isinstance(metrics, dict) else None
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 <= seconds < 86_400:
        return round(seconds * 1000)
    return None


class FalProvider:
    name = "fal"
    resolutions = frozenset(RESOLUTIONS)
    image_sizes = frozenset(IMAGE_SIZES)

    def __init__(self, settings: HostSettings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._api = JsonApi.keyed(
            self.name,
            settings,
            session,
            auth=("Authorization", "Key {key}"),
            parse_error=parse_error,
            content_codes=CONTENT_CODES,
        )
        self._call = self._api.call

    def _url(self, run: Run, key: str) -> str:
        url = run.data.get(key)
        if not isinstance(url, str) or not url:
            # Rebuilding it would drop or keep the endpoint sub-path wrongly; only fal knows it.
            raise InvalidRequest(
                f"run {run.run_id} has no {key}: its Run.data was not kept with the job", host=self.name
            )
        return url

    async def submit(self, request: EditRequest, *, callback_url: str | None = None) -> Run:
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "image_urls": [_image_url(image) for image in request.images],
            "num_images": request.count,
            "quality": request.quality,
            "image_size": _image_size(request),
            "output_format": request.output_format,
        }
        if request.mask is not None:
            body[MASK_FIELD] = _image_url(request.mask)
        url = f"{self._settings.base_url}/{self._settings.model}"
        if callback_url is not None:
            url = f"{url}?{urlencode({'fal_webhook': callback_url})}"
        reply = await self._call("POST", url, body)
        request_id = reply.get("request_id")
        urls = {key: reply.get(key) for key in _URL_KEYS}
        if not isinstance(request_id, str) or not request_id:
            raise Unavailable("fal accepted the request but sent no request_id", host=self.name)
        if not all(isinstance(value, str) and value for value in urls.values()):
            raise Unavailable(f"fal accepted request {request_id} but sent no queue URLs", host=self.name)
        return Run(self.name, request_id, urls)

    async def status(self, run: Run) -> RunState:
        status = await self._call("GET", self._url(run, "status_url"))
        raw = status.get("status")
        if raw == "IN_QUEUE":
            return RunState(RunStatus.QUEUED, queue_position=int_or_none(status.get("queue_position")))
        if raw == "IN_PROGRESS":
            return RunState(RunStatus.RUNNING)
        if raw != "COMPLETED":
            raise Unavailable(f"fal reported an unknown status {raw!r}", host=self.name)
        if status.get("error") or status.get("error_type"):
            return RunState(RunStatus.FAILED, error=await self._failure(run, status))
        payload = await self._call("GET", self._url(run, "response_url"))
        return output_state(payload, _duration_ms(status))

    async def _failure(self, run: Run, status: dict[str, Any]) -> ProviderError:
        """Why a finished run failed; the result URL answers with the model's typed error."""
        fallback = str(status.get("error") or "the run failed at fal")
        error_type = status.get("error_type")
        code = str(error_type) if error_type else None
        if code in CONTENT_CODES:
            return ContentRejected(fallback, host=self.name, code=code)
        try:
            await self._call("GET", self._url(run, "response_url"))
        except ProviderError as error:
            if error.kind in (ErrorKind.CONTENT_REJECTED, ErrorKind.INVALID_REQUEST):
                return error
        # The run is over either way: a blip while asking why must not make it look unfinished.
        return RunFailed(fallback, host=self.name, code=code)

    async def result(self, run: Run) -> EditResult:
        state = await self.status(run)
        if state.error is not None:
            raise state.error
        if state.result is None:
            raise InvalidRequest(f"run {run.run_id} has not finished ({state.status})", host=self.name)
        return state.result

    async def cancel(self, run: Run) -> bool:
        """True when fal removed the request from its queue or signalled the runner to stop."""
        try:
            reply = await self._call("PUT", self._url(run, "cancel_url"))
        except InvalidRequest:
            return False  # ALREADY_COMPLETED or NOT_FOUND: nothing left to stop
        except ProviderError as error:
            log.warning("cancelling fal request %s failed: %s", run.run_id, error.message)
            return False
        return reply.get("status") in _CANCELLED

    async def close(self) -> None:
        """The session belongs to the app, which closes it."""


def parse_callback(body: bytes) -> tuple[str, RunState]:
    """A fal webhook as (request id, state): `status` OK with the model output as `payload`,
    or ERROR with `error` and the model's error body as `payload`."""
    payload = json_object(body)
    request_id = required_id(payload, "request_id")
    status = payload.get("status")
    output = payload.get("payload")
    if status == "OK":
        if output is None:
            # fal could not serialise the output; it says why in payload_error.
            reason = payload.get("payload_error")
            message = str(reason) if reason else "fal sent no output"
            return request_id, RunState(RunStatus.FAILED, error=RunFailed(message, host="fal"))
        if not isinstance(output, dict):
            raise ValueError("payload is not an object")
        return request_id, output_state(output)
    if status == "ERROR":
        error = payload.get("error")
        fallback = str(error) if error else "the run failed at fal"
        return request_id, RunState(RunStatus.FAILED, error=run_error(output, fallback))
    raise ValueError("status is not OK or ERROR")


# fal signs its webhooks with Ed25519 (keys from its JWKS), which needs the `cryptography` package this
# project does not ship: its webhooks are unchecked hints that only prompt a poll.
SPEC = HostSpec("fal", FalProvider, parse_callback)
