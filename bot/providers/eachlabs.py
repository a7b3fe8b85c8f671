"""each::labs predictions: create one, then poll it (or take its webhook) until it finishes.

Facts from docs.eachlabs.ai (source: the eachlabs/mintlify-docs repository; see
shared/providers.md):

- every call authenticates with `Authorization: Bearer <key>` (authentication); the older
  `X-API-Key` header still works but is no longer documented, so it is not used;
- `POST /v1/prediction` with `{model, version, input, webhook_url?, webhook_secret?}` answers
  `{"status": "success", "message", "predictionID"}` (api/predictions/create-prediction);
- `GET /v1/prediction/{id}` answers `{id, input, status, output, logs, metrics: {predict_time,
  cost}, urls}`; status is created (queued, not yet started), starting, processing, success,
  error or cancelled, and `output` is a string, an array or an object by model
  (api/predictions/get-prediction);
- a prediction that ends `error` carries an envelope in `output` with `error_code` and
  `error_message` (or, when dispatch failed, only `error`) (errors; video/billing-limits, "Error
  catalog");
- `POST /v1/prediction/{id}/cancel` answers `{"status": "success", ...}` while the prediction
  has not finished, and a cancelled prediction is not billed (video/billing-limits);
- HTTP errors are `{"error": "..."}`, the 402 and 429 ones with the reason in `details` (errors).

How often to poll is the job runner's business (it backs off from `providers.poll_interval`
to `poll_interval_max`), so `status` is a single request like every other host's.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
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
)
from bot.providers.callbacks import header, json_object, required_id
from bot.providers.http import JsonApi
from bot.providers.payloads import (
    MASK_FIELD,
    OPENAI_PRICES,
    int_or_none,
    nsfw_flag,
    output_images,
    token_usd_micros,
)
from bot.providers.settings import HostSettings
from bot.providers.spec import HostSpec

log = logging.getLogger(__name__)

# The GPT image skill docs use "0.0.1"; the newest reference says the field is ignored.
VERSION = "0.0.1"
_STATUS = {
    "created": RunStatus.QUEUED,
    "starting": RunStatus.QUEUED,
    "processing": RunStatus.RUNNING,
    "success": RunStatus.SUCCEEDED,
    "error": RunStatus.FAILED,
    "cancelled": RunStatus.CANCELLED,
}
# Error codes of the error catalog that mean the request or its inputs were refused.
_INVALID_CODES = frozenset(
    {"INPUT_VALIDATION_ERROR", "PROVIDER_BAD_REQUEST", "PROVIDER_REJECTED", "INPUT_DOWNLOAD_ERROR"}
)
# No error code for a safety refusal is documented; `content_moderation` is the documented error
# classification of such failures (GET /v1/executions). ASSUMPTION: it, or the model's own
# wording passed through in the message, is how a refusal shows.
_CONTENT_MARKERS = ("moderation", "content policy", "content_policy", "safety", "nsfw")
_FAILED = "the prediction failed at each::labs"


def _parse_error(body: Any) -> tuple[str | None, str | None]:
    """`{"error": ...}`, with the specific reason (which cap was hit, say) in `details`."""
    if not isinstance(body, dict):
        return None, None
    parts = [str(body[key]) for key in ("error", "details") if body.get(key)]
    return None, ": ".join(parts) or None


def _image_url(image: ImageRef) -> str:
    """each::labs documents image inputs as URLs only (whether it takes data URIs is unknown)."""
    if image.url is None:
        raise InvalidRequest(
            f"image {image.filename} is not at a URL, which each::labs requires", host="eachlabs"
        )
    return image.url


def _outputs(output: Any) -> list[OutputImage]:
    """`output` by model: a URL, a list of URLs (or of fal-style images), `{url}`, or fal's
    `{images: [...]}`."""
    if isinstance(output, str):
        return [OutputImage(url=output)] if output else []
    if isinstance(output, list):
        urls = [OutputImage(url=item) for item in output if isinstance(item, str) and item]
        return urls or output_images({"images": output})
    if isinstance(output, dict) and isinstance(output.get("url"), str) and output["url"]:
        return [OutputImage(url=output["url"])]
    return output_images(output)


def _usd_micros(prediction: dict[str, Any]) -> int | None:
    metrics = prediction.get("metrics")
    cost = metrics.get("cost") if isinstance(metrics, dict) else None
    if isinstance(cost, int | float) and not isinstance(cost, bool) and 0 <= cost < 1_000_000:
        return round(cost * 1_000_000)
    output = prediction.get("output")
    return token_usd_micros(output.get("usage"), OPENAI_PRICES) if isinstance(output, dict) else None


def _duration_ms(prediction: dict[str, Any]) -> int | None:
    metrics = prediction.get("metrics")
    seconds = metrics.get("predict_time") if isinstance(metrics, dict) else None
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and 0 <= seconds < 86_400:
        return round(seconds * 1000)
    return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def failure(message: str, code: str | None = None, classification: Any = None) -> ProviderError:
    """The typed error of a failed prediction: a safety refusal (no charge, no failover), a
    refused input, or a failure with the host's own reason for the member to read."""
    labels = [code or ""]
    if isinstance(classification, dict):
        labels += [str(value) for value in classification.values()]
    if _says_content(labels):
        return ContentRejected(message, host="eachlabs", code=code)
    if code in _INVALID_CODES:
        return InvalidRequest(message, host="eachlabs", code=code)
    if _says_content([message]):
        return ContentRejected(message, host="eachlabs", code=code)
    return RunFailed(message, host="eachlabs", code=code)


def _says_content(labels: list[str]) -> bool:
    return any(marker in label.lower() for label in labels for marker in _CONTENT_MARKERS)


def _failure(prediction: dict[str, Any]) -> ProviderError:
    envelope = prediction.get("output")
    if not isinstance(envelope, dict):
        envelope = {}
    message = (
        _text(envelope.get("error_message"))
        or _text(envelope.get("error"))
        or _text(prediction.get("logs"))
        or _FAILED
    )
    return failure(message, _text(envelope.get("error_code")), envelope.get("classification"))


def prediction_state(prediction: dict[str, Any]) -> RunState:
    """A prediction (from a poll, or a webhook's output) as a RunState."""
    raw = prediction.get("status")
    status = _STATUS.get(raw) if isinstance(raw, str) else None
    if status is None:
        raise Unavailable(f"each::labs reported an unknown status {raw!r}", host="eachlabs")
    if status is RunStatus.FAILED:
        return RunState(status, error=_failure(prediction))
    if status is not RunStatus.SUCCEEDED:
        return RunState(status)
    output = prediction.get("output")
    images = _outputs(output)
    if not images:
        return RunState(
            RunStatus.FAILED, error=RunFailed("each::labs finished without any image", host="eachlabs")
        )
    result = EditResult(
        images=images,
        seed=int_or_none(output.get("seed")) if isinstance(output, dict) else None,
        duration_ms=_duration_ms(prediction),
        nsfw=nsfw_flag(output) if isinstance(output, dict) else False,
        usd_micros=_usd_micros(prediction),
    )
    return RunState(status, result=result)


class EachlabsProvider:
    name = "eachlabs"
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
        if not request.images:
            raise InvalidRequest("an edit needs at least one image", host=self.name)
        urls = [_image_url(image) for image in request.images]
        model_input: dict[str, Any] = {
            "prompt": request.prompt,
            # The GPT Image v2 edit schema documents a single required `image_url`.
            "image_url": urls[0],
            "num_images": request.count,
            "quality": request.quality,
            # ASSUMPTION: fal's presets, since each::labs' GPT image schemas mirror fal's models.
            "image_size": request.image_size,
            "output_format": request.output_format,
        }
        if len(urls) > 1:
            # ASSUMPTION: the GPT image family's `image_urls` (documented for v1.5 edit) for the
            # extra references; the v2 schema is documented as open beyond `image_url`.
            model_input["image_urls"] = urls
        if request.mask is not None:
            model_input[MASK_FIELD] = _image_url(request.mask)  # ASSUMPTION: the same name as fal
        body: dict[str, Any] = {"model": self._settings.model, "version": VERSION, "input": model_input}
        if callback_url is not None:
            body["webhook_url"] = callback_url
            if self._settings.callback_secret is not None:
                body["webhook_secret"] = self._settings.callback_secret.get_secret_value()
        reply = await self._call("POST", "/v1/prediction", body)
        prediction_id = reply.get("predictionID")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise Unavailable("each::labs accepted the prediction but sent no predictionID", host=self.name)
        return Run(self.name, prediction_id)

    async def status(self, run: Run) -> RunState:
        return prediction_state(await self._call("GET", f"/v1/prediction/{run.run_id}"))

    async def result(self, run: Run) -> EditResult:
        return finished_result(await self.status(run), run, self.name)

    async def cancel(self, run: Run) -> bool:
        """each::labs documents a cancel as record-only: the prediction ends `cancelled` and is
        not billed, while a job already running at the model may still finish there."""
        try:
            reply = await self._call("POST", f"/v1/prediction/{run.run_id}/cancel")
        except InvalidRequest:
            return False  # unknown or already finished
        except ProviderError as error:
            log.warning("cancelling each::labs prediction %s failed: %s", run.run_id, error.message)
            return False
        return reply.get("status") == "success"

    async def close(self) -> None:
        """The session belongs to the app, which closes it."""


SECRET_HEADER = "X-Webhook-Secret"  # noqa: S105 - a header name, not a secret


def verify_callback(raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
    """Whether `X-Webhook-Secret` is exactly `secret`, compared in constant time.

    each::labs documents the header as carrying the secret verbatim, with no signature of the
    body (docs.eachlabs.ai/api/webhooks/payload-reference), so `raw_body` plays no part. An empty
    secret never verifies.
    """
    sent = header(headers, SECRET_HEADER)
    if not secret or sent is None:
        return False
    # Bytes, since compare_digest refuses non-ASCII text; surrogatepass encodes any str one way.
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass"))


def parse_callback(body: bytes) -> tuple[str, RunState]:
    """An each::labs webhook as (prediction id, state).

    docs.eachlabs.ai/api/webhooks/payload-reference: `{exec_id, flow_id, status, output, error}`,
    `exec_id` being the `predictionID` create answered and `status` succeeded | failed; on
    failure `output` is `[{..., "error": reason}]` and the top-level `error` is empty.
    """
    payload = json_object(body)
    prediction_id = required_id(payload, "exec_id")
    status, output = payload.get("status"), payload.get("output")
    if status == "succeeded":
        try:
            return prediction_id, prediction_state({"status": "success", "output": output})
        except ProviderError as error:
            raise ValueError(error.message) from None
    if status == "failed":
        first = output[0] if isinstance(output, list) and output else None
        reason = first.get("error") if isinstance(first, dict) else None
        message = str(reason or payload.get("error") or "the prediction failed at each::labs")
        return prediction_id, RunState(RunStatus.FAILED, error=failure(message))
    raise ValueError("status is not succeeded or failed")


SPEC = HostSpec("eachlabs", EachlabsProvider, parse_callback, verify_callback)
