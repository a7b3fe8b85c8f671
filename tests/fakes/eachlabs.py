"""An in-process fake of the each::labs predictions API for the GPT Image 2 edit model.

It follows docs.eachlabs.ai (source: the eachlabs/mintlify-docs repository):

- every call needs ``Authorization: Bearer <key>`` (authentication; the undocumented
  ``X-API-Key`` is refused here, so a client relying on it fails),
- ``POST /v1/prediction`` with ``{model, version, input, webhook_url?, webhook_secret?}``
  answers ``{"status": "success", "message", "predictionID"}`` (api/predictions/create-prediction),
- ``GET /v1/prediction/{id}`` answers ``{id, input, status, output, logs, metrics: {predict_time,
  cost}, urls: {get, cancel}}`` with status created -> processing -> success | error,
  or cancelled (api/predictions/get-prediction),
- a failed prediction ends ``error`` with the error envelope in ``output`` (``error_code``,
  ``error_message``, ``classification``, ``error: "Execution failed"``, ...) and costs 0
  (video/billing-limits, "Error catalog"),
- ``POST /v1/prediction/{id}/cancel`` answers ``{"status": "success", "message": "Prediction
  canceled successfully"}`` and the prediction ends ``cancelled`` at no cost
  (video/billing-limits, "Cancelling a prediction"),
- every HTTP error is ``{"error": "..."}``: 400 bad input, 401 bad key, 404 unknown model or
  prediction, 429 rate limited, 500 (errors),
- when a prediction has a ``webhook_url`` and ends success or error, the documented webhook
  ``{exec_id, flow_id, status: succeeded | failed, output, error: ""}`` is POSTed to it
  (loopback only), with ``X-Webhook-Secret: <webhook_secret>`` verbatim when one was given;
  a failure's ``output`` is ``[{"id", "status", "output", "error": reason}]``; cancelling sends
  none (api/webhooks/payload-reference).

A new prediction stays ``created`` for its first ``queued_polls`` polls, as one held back by
each::labs' concurrency caps does. The output is a list of image URLs (the GPT Image v2 skill
docs say "array of image URLs"); ``output_shape`` "string" gives one URL as a string, and "fal"
fal's ``{images, has_nsfw_concepts, seed}``, the only shape in which an NSFW flag can travel.
``fail_runs`` (read when a prediction is created) is merged into the error envelope.

ASSUMPTIONS of the fake (not documented): cancelling a finished prediction is a 400, and
webhook deliveries are retried on 5xx and network errors only (each::labs documents up to 3
attempts, also on 4xx, about 10 s apart).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.fakes.fal import LoopbackFake, json_response
from tests.images import png

__all__ = ["FakeEachlabs", "Prediction"]

KNOWN_MODEL = "gpt-image-v2-edit"
COST_PER_IMAGE = 0.034
FINAL_STATUSES = frozenset({"success", "error", "cancelled"})


@dataclass
class Prediction:
    id: str
    model: str
    input: dict[str, Any]
    webhook_url: str | None
    webhook_secret: str | None = None
    status: str = "created"
    output: Any = None
    logs: str | None = None
    predict_time: float | None = None
    cost: float | None = None
    polls: int = 0
    fail_with: dict[str, Any] | None = field(default=None, repr=False)
    empty_output: bool = field(default=False, repr=False)
    nsfw: bool = field(default=False, repr=False)

    def to_api(self, base_url: str) -> dict[str, Any]:
        url = f"{base_url}/v1/prediction/{self.id}"
        metrics = {"predict_time": self.predict_time, "cost": self.cost} if self.cost is not None else {}
        return {
            "id": self.id,
            "input": self.input,
            "status": self.status,
            "output": self.output,
            "logs": self.logs,
            "metrics": metrics,
            "urls": {"get": url, "cancel": f"{url}/cancel"},
        }

    def webhook(self) -> dict[str, Any]:
        """The documented webhook body for a prediction that ended success or error."""
        if self.status == "success":
            return {
                "exec_id": self.id,
                "flow_id": None,
                "status": "succeeded",
                "output": self.output,
                "error": "",
            }
        reason = self.output.get("error_message") if isinstance(self.output, dict) else None
        detail = {"id": "", "status": "", "output": "", "error": f"Error: {reason}"}
        return {"exec_id": self.id, "flow_id": None, "status": "failed", "output": [detail], "error": ""}


def _input_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "Invalid input for model: input must be an object"
    if not isinstance(data.get("prompt"), str) or not data["prompt"].strip():
        return "Invalid input for model: prompt is required"
    if not isinstance(data.get("image_url"), str) or not data["image_url"].startswith(
        ("http://", "https://")
    ):
        return "Invalid input for model: image_url must be an http(s) URL"
    extra = data.get("image_urls")
    if extra is not None and not (isinstance(extra, list) and all(isinstance(u, str) for u in extra)):
        return "Invalid input for model: image_urls must be a list of URLs"
    num = data.get("num_images", 1)
    if not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= 4:
        return "Invalid input for model: num_images must be between 1 and 4"
    return None


class FakeEachlabs(LoopbackFake):
    """The fake each::labs API (see the module docstring)."""

    webhook_retry_delays: tuple[float, ...] = (0.0, 0.0)

    def __init__(self, *, api_key: str = "each-test-key", delay: float = 0.0) -> None:
        super().__init__(api_key=api_key, delay=delay)
        self.predictions: dict[str, Prediction] = {}
        self.order: list[Prediction] = []
        # Read when a prediction is created: fields of the error envelope it then fails with.
        self.fail_runs: dict[str, Any] | None = None
        self.empty_output = False
        self.nsfw = False
        self.queued_polls = 0
        self.output_shape: Literal["urls", "string", "fal"] = "urls"

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    async def wait_status(self, prediction_id: str, *statuses: str) -> Prediction:
        return await self.wait_until(
            lambda: p if (p := self.predictions.get(prediction_id)) and p.status in statuses else None,
            f"prediction {prediction_id} to reach {statuses}",
        )

    async def route(self, request: web.Request, raw: bytes) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return json_response(401, {"error": "Invalid or missing API key"})
        method, path = request.method, request.path
        if method == "POST" and path.rstrip("/") == "/v1/prediction":
            return self._create(raw)
        if m := re.fullmatch(r"/v1/prediction/([^/]+)(/cancel)?", path):
            prediction = self.predictions.get(m.group(1))
            if prediction is None:
                return json_response(404, {"error": "Prediction not found"})
            if method == "GET" and m.group(2) is None:
                prediction.polls += 1
                self.notify()
                return json_response(200, prediction.to_api(self.base_url))
            if method == "POST" and m.group(2):
                return self._cancel(prediction)
        return json_response(404, {"error": f"No route for {method} {path}"})

    def _create(self, raw: bytes) -> web.Response:
        try:
            body = json.loads(raw)
        except ValueError:
            return json_response(400, {"error": "Malformed JSON body"})
        if not isinstance(body, dict) or not body.get("model"):
            return json_response(400, {"error": "model field is required"})
        if body["model"] != KNOWN_MODEL:
            return json_response(404, {"error": "Failed to fetch model: model not found"})
        problem = _input_problem(body.get("input"))
        if problem is not None:
            return json_response(400, {"error": problem})
        prediction = Prediction(
            id=str(uuid.uuid4()),
            model=body["model"],
            input=body["input"],
            webhook_url=body.get("webhook_url"),
            webhook_secret=body.get("webhook_secret"),
            fail_with=self.fail_runs,
            empty_output=self.empty_output,
            nsfw=self.nsfw,
        )
        self.predictions[prediction.id] = prediction
        self.order.append(prediction)
        self.spawn(self._lifecycle(prediction), f"eachlabs-{prediction.id}")
        self.notify()
        return json_response(
            200,
            {
                "status": "success",
                "message": "Prediction created successfully",
                "predictionID": prediction.id,
            },
        )

    def _cancel(self, prediction: Prediction) -> web.Response:
        if prediction.status in FINAL_STATUSES:
            return json_response(400, {"error": "Prediction cannot be cancelled"})
        prediction.status = "cancelled"
        prediction.cost = 0
        self.release(prediction.id)
        return json_response(200, {"status": "success", "message": "Prediction canceled successfully"})

    async def _lifecycle(self, prediction: Prediction) -> None:
        queued = self.queued_polls
        await self.wait_until(
            lambda: True if prediction.polls >= queued or prediction.status == "cancelled" else None,
            f"{queued} polls of {prediction.id}",
            timeout=None,
        )
        if prediction.status == "cancelled":
            return
        prediction.status = "processing"
        self.notify()
        started = time.monotonic()
        await self.work(prediction.id)
        if prediction.status == "cancelled":
            return
        prediction.predict_time = round(time.monotonic() - started, 3)
        if prediction.fail_with is not None:
            self._fail(prediction, prediction.fail_with)
        else:
            self._succeed(prediction)
        self.notify()
        if prediction.webhook_url is not None:
            headers = {"Content-Type": "application/json"}
            if prediction.webhook_secret is not None:
                headers["X-Webhook-Secret"] = prediction.webhook_secret
            body = json.dumps(prediction.webhook()).encode()
            await self.post_callback(prediction.webhook_url, body, headers, self.webhook_retry_delays)

    def _fail(self, prediction: Prediction, fields: dict[str, Any]) -> None:
        """The documented error envelope (as the error catalog's production examples)."""
        prediction.output = {
            "classification": {"category": "PROVIDER"},
            "error": "Execution failed",
            "error_code": "PROVIDER_FAILED",
            "error_message": "exec_error",
            "error_step": "poll",
            "execution_id": prediction.id,
            "model_slug": prediction.model,
            "retryable": False,
            "status": "ERROR",
            "success": False,
            **fields,
        }
        prediction.cost = 0
        prediction.status = "error"

    def _succeed(self, prediction: Prediction) -> None:
        count = 0 if prediction.empty_output else int(prediction.input.get("num_images", 1))
        urls = [self.add_file(png(32, 24), "image/png", "png") for _ in range(count)]
        if self.output_shape == "fal":
            images = [{"url": url, "content_type": "image/png", "width": 32, "height": 24} for url in urls]
            prediction.output = {"images": images, "seed": 7, "has_nsfw_concepts": [prediction.nsfw] * count}
        elif self.output_shape == "string":
            prediction.output = urls[0] if urls else ""
        else:
            prediction.output = urls
        prediction.cost = round(COST_PER_IMAGE * count, 6)
        prediction.status = "success"
