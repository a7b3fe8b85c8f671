"""Runflow: create a run, then poll it (or take its callback) until it finishes.

Facts from docs.runflow.io (see shared/providers.md): runs are created at
`POST /v1/models/{model}/runs` and read at `GET /v1/runs/{id}`; `status_code` is one of
queued, dispatching, running, succeeded, failed, canceled, partial_succeeded, the last to be
treated "the same as succeeded" (concepts/runs). A run's `cost` is USD as a string
(api-reference/runs/get-run). There is no public cancel: cancelling means we stop waiting and
ignore a late result.

A partial run delivers, and is charged for, the images its output lists: the job runner
charges per image delivered and records the run's own `cost` as the spend.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp

from bot.providers.base import (
    PRESET_SIZES,
    ContentRejected,
    EditRequest,
    EditResult,
    ImageRef,
    InvalidRequest,
    OutputImage,
    ProviderError,
    Run,
    RunFailed,
    RunState,
    RunStatus,
    Unavailable,
    finished_result,
    require_preset_size,
    url_or_data_uri,
)
from bot.providers.callbacks import header, json_object, required_id
from bot.providers.http import JsonApi
from bot.providers.payloads import int_or_none
from bot.providers.settings import HostSettings
from bot.providers.spec import HostSpec

_STATUS = {
    "queued": RunStatus.QUEUED,
    "dispatching": RunStatus.QUEUED,
    "running": RunStatus.RUNNING,
    "succeeded": RunStatus.SUCCEEDED,
    "partial_succeeded": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    "canceled": RunStatus.CANCELLED,
    # Callbacks' event names spell it so (`run.cancelled`); accepted in `status` too.
    "cancelled": RunStatus.CANCELLED,
}
# A run costing this much or more is a misreading, not a price: the estimate is safer.
_MAX_USD = 1_000_000
_CONTENT_MARKERS = ("CONTENT", "NSFW", "SAFETY", "MODERATION")
_INPUT_MARKERS = ("INPUT", "VALIDATION")


def _parse_error(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, dict):
        code = body.get("code")
        message = body.get("message")
        return (str(code) if code else None, str(message) if message else None)
    return None, None


def _image_url(image: ImageRef) -> str:
    # ASSUMPTION: Runflow documents URLs only; bytes go as a data URI, which fal (that serves the
    # same model) documents and Runflow is believed to pass through.
    return url_or_data_uri(image, "runflow")


def _outputs(output: Any) -> list[OutputImage]:
    """Runflow documents two output shapes (`outputs[]` entries and `image_urls[]`); take either."""
    if not isinstance(output, dict):
        return []
    images: list[OutputImage] = []
    for entry in output.get("outputs") or output.get("images") or []:
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("url"), str)
            and entry.get("type", "image") == "image"
        ):
            images.append(
                OutputImage(
                    url=entry["url"],
                    content_type=entry.get("content_type"),
                    width=entry.get("width"),
                    height=entry.get("height"),
                )
            )
    if not images:
        images = [OutputImage(url=url) for url in output.get("image_urls") or [] if isinstance(url, str)]
    return images


def _usd_micros(cost: Any) -> int | None:
    """The run's `cost` (documented as a string of USD) in micro-dollars; None when it is not a
    plausible amount, so the spend falls back to the estimate rather than to a wrong figure."""
    if isinstance(cost, bool) or not isinstance(cost, str | int | float):
        return None
    try:
        usd = Decimal(str(cost).strip())
    except InvalidOperation:
        return None
    if not usd.is_finite() or not 0 <= usd < _MAX_USD:
        return None
    return int((usd * 1_000_000).to_integral_value())


def _failure(run: dict[str, Any]) -> ProviderError:
    code = str(run.get("failure_code") or "RUN_FAILED")
    message = str(run.get("failure_message") or "the run failed at Runflow")
    if any(marker in code.upper() for marker in _CONTENT_MARKERS):
        return ContentRejected(message, host="runflow", code=code)
    if any(marker in code.upper() for marker in _INPUT_MARKERS):
        return InvalidRequest(message, host="runflow", code=code)
    return RunFailed(message, host="runflow", code=code)


def run_state(run: dict[str, Any]) -> RunState:
    """A Runflow run object (from a poll or a callback) as a RunState."""
    raw_status = str(run.get("status_code") or run.get("status") or "")
    status = _STATUS.get(raw_status)
    if status is None:
        raise Unavailable(f"Runflow reported an unknown status {raw_status!r}", host="runflow")
    if status is RunStatus.FAILED:
        return RunState(status, error=_failure(run))
    if status is not RunStatus.SUCCEEDED:
        return RunState(status)
    output = run.get("output")
    images = _outputs(output)
    if not images:
        return RunState(
            RunStatus.FAILED, error=RunFailed("Runflow finished without any image", host="runflow")
        )
    nsfw = output.get("nsfw_detected") if isinstance(output, dict) else False
    result = EditResult(
        images=images,
        seed=int_or_none(output.get("seed")) if isinstance(output, dict) else None,
        duration_ms=int_or_none(run.get("duration_ms")),
        nsfw=any(nsfw) if isinstance(nsfw, list) else bool(nsfw),
        usd_micros=_usd_micros(run.get("cost")),
    )
    return RunState(status, result=result)


class RunflowProvider:
    name = "runflow"
    # Its documented `image_size` takes presets only, which the model makes at about 1K.
    resolutions = frozenset({"1K"})
    image_sizes = PRESET_SIZES

    def __init__(self, settings: HostSettings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._api = JsonApi.keyed(
            self.name, settings, session, auth=("Authorization", "Bearer {key}"), parse_error=_parse_error
        )

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return await self._api.call(method, f"{self._settings.base_url}{path}", body)

    async def submit(self, request: EditRequest, *, callback_url: str | None = None) -> Run:
        require_preset_size(request, self.name)
        model_input: dict[str, Any] = {
            "prompt": request.prompt,
            "image_urls": [_image_url(image) for image in request.images],
            "num_images": request.count,
            "quality": request.quality,
            "image_size": request.image_size,
            "output_format": request.output_format,
        }
        if request.mask is not None:
            model_input["mask_url"] = _image_url(request.mask)
        body: dict[str, Any] = {
            "input": model_input,
            "metadata": {"job_id": request.job_id},
            "client_ref": f"retouch-job-{request.job_id}",
        }
        if callback_url is not None:
            body["callback_url"] = callback_url
        run = await self._call("POST", f"/v1/models/{self._settings.model}/runs", body)
        run_id = run.get("id")
        if not isinstance(run_id, str) or not run_id:
            raise Unavailable("Runflow accepted the run but sent no run id", host=self.name)
        return Run(self.name, run_id)

    async def status(self, run: Run) -> RunState:
        return run_state(await self._call("GET", f"/v1/runs/{run.run_id}"))

    async def result(self, run: Run) -> EditResult:
        return finished_result(await self.status(run), run, self.name)

    async def cancel(self, run: Run) -> bool:
        return False

    async def close(self) -> None:
        """The session belongs to the app, which closes it."""


SIGNATURE_HEADER = "Runflow-Signature"
_LIST_KEYS = ("outputs", "images", "image_urls")


def verify_callback(raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
    """Whether `Runflow-Signature` is the hex HMAC-SHA256 of the exact body under `secret`.

    An empty secret never verifies: that is a configuration mistake, not a reason to accept
    anything anyone posts.
    """
    signature = header(headers, SIGNATURE_HEADER)
    if not secret or signature is None:
        return False
    signature = signature.strip().lower()
    if not signature.isascii():
        return False
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


def _runflow_output(output: Any) -> dict[str, Any] | None:
    """The callback's output in the shape `run_state` reads: lists where it iterates, and no
    seed that is not an integer (a bad seed is dropped, it is no reason to refuse the result)."""
    if output is None:
        return None
    if not isinstance(output, dict):
        raise ValueError("output is not an object")
    for key in _LIST_KEYS:
        if output.get(key) is not None and not isinstance(output[key], list):
            raise ValueError(f"output.{key} is not a list")
    nsfw = output.get("nsfw_detected")
    if nsfw is not None and not isinstance(nsfw, bool | list):
        raise ValueError("output.nsfw_detected is not a flag")
    return {**output, "seed": int_or_none(output.get("seed"))}


def parse_callback(body: bytes) -> tuple[str, RunState]:
    """A Runflow callback as (run id, state), read the same way as a polled run.

    docs.runflow.io/concepts/callbacks: `status` is the run's final `status_code` (succeeded,
    partial_succeeded, failed, canceled), `output` the model output, the error envelope
    `{code, message, errors}` on failure, or null when cancelled.
    """
    payload = json_object(body)
    run_id = required_id(payload, "run_id")
    status = payload.get("status")
    if not isinstance(status, str):
        raise ValueError("status is missing")
    output = _runflow_output(payload.get("output"))
    run: dict[str, Any] = {"status": status, "duration_ms": int_or_none(payload.get("duration_ms"))}
    if status == "failed":
        reason = output or {}
        run["failure_code"] = payload.get("failure_code") or reason.get("code")
        run["failure_message"] = payload.get("failure_message") or reason.get("message")
    else:
        run["output"] = output
    try:
        state = run_state(run)
    except ProviderError as error:
        raise ValueError(error.message) from None
    if not state.status.final:
        raise ValueError(f"status {status!r} is not a final one")
    return run_id, state


SPEC = HostSpec("runflow", RunflowProvider, parse_callback, verify_callback)
