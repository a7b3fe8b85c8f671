"""An in-process fake of the each::labs predictions API for the GPT Image 2 edit model.

It follows docs.eachlabs.ai (API reference, errors and webhooks pages):

- ``POST /v1/prediction`` (``X-API-Key``) with ``{model, version, input, webhook_url?,
  webhook_secret?}`` answers ``{"status": "success", "message", "predictionID"}``,
- ``GET /v1/prediction/{id}`` answers ``{id, input, status, output, logs, metrics: {predict_time,
  cost}, urls: {get, cancel}}`` with status starting -> processing -> success | failed,
- ``POST /v1/prediction/{id}/cancel`` answers ``{"status": "cancelled", ...}``,
- every error is ``{"error": "..."}``: 400 bad input, 401 bad key, 404 unknown model or
  prediction, 429 rate limited, 500.

The output is a list of image URLs (the GPT Image v2 skill docs say "array of image URLs");
``output_shape = "fal"`` switches to fal's ``{images, has_nsfw_concepts, seed}`` instead, the
only shape in which an NSFW flag can travel. ASSUMPTIONS of the fake: a failed prediction
carries its reason in ``error`` (and ``logs``), and cancelling a finished prediction is a 400.
When a prediction has a ``webhook_url``, the finished prediction object is POSTed to it
(loopback only) without a signature: the header carrying one is undocumented.
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


@dataclass
class Prediction:
    id: str
    model: str
    input: dict[str, Any]
    webhook_url: str | None
    status: str = "starting"
    output: Any = None
    error: str | None = None
    logs: str | None = None
    predict_time: float | None = None
    cost: float | None = None
    fail_with: str | None = field(default=None, repr=False)
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
            "error": self.error,
            "logs": self.logs,
            "metrics": metrics,
            "urls": {"get": url, "cancel": f"{url}/cancel"},
        }


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
        # Read when a prediction is created: a message makes it fail with that `error`.
        self.fail_runs: str | None = None
        self.empty_output = False
        self.nsfw = False
        self.output_shape: Literal["urls", "fal"] = "urls"

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    async def wait_status(self, prediction_id: str, *statuses: str) -> Prediction:
        return await self.wait_until(
            lambda: p if (p := self.predictions.get(prediction_id)) and p.status in statuses else None,
            f"prediction {prediction_id} to reach {statuses}",
        )

    async def route(self, request: web.Request, raw: bytes) -> web.Response:
        if request.headers.get("X-API-Key") != self.api_key:
            return json_response(401, {"error": "Invalid or missing API key"})
        method, path = request.method, request.path
        if method == "POST" and path.rstrip("/") == "/v1/prediction":
            return self._create(raw)
        if m := re.fullmatch(r"/v1/prediction/([^/]+)(/cancel)?", path):
            prediction = self.predictions.get(m.group(1))
            if prediction is None:
                return json_response(404, {"error": "Prediction not found"})
            if method == "GET" and m.group(2) is None:
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
        if prediction.status in ("success", "failed", "cancelled"):
            return json_response(400, {"error": "Prediction cannot be cancelled"})
        prediction.status = "cancelled"
        self.release(prediction.id)
        return json_response(
            200,
            {
                "status": "cancelled",
                "message": "Prediction canceled successfully",
                "predictionID": prediction.id,
            },
        )

    async def _lifecycle(self, prediction: Prediction) -> None:
        prediction.status = "processing"
        self.notify()
        started = time.monotonic()
        await self.work(prediction.id)
        if prediction.status == "cancelled":
            return
        prediction.predict_time = round(time.monotonic() - started, 3)
        if prediction.fail_with is not None:
            prediction.error = prediction.fail_with
            prediction.logs = f"Error: {prediction.fail_with}"
            prediction.status = "failed"
            self.notify()
            return
        count = 0 if prediction.empty_output else int(prediction.input.get("num_images", 1))
        urls = [self.add_file(png(32, 24), "image/png", "png") for _ in range(count)]
        if self.output_shape == "fal":
            images = [{"url": url, "content_type": "image/png", "width": 32, "height": 24} for url in urls]
            prediction.output = {"images": images, "seed": 7, "has_nsfw_concepts": [prediction.nsfw] * count}
        else:
            prediction.output = urls
        prediction.cost = round(COST_PER_IMAGE * count, 6)
        prediction.status = "success"
        self.notify()
        if prediction.webhook_url is not None:
            body = json.dumps(prediction.to_api(self.base_url)).encode()
            await self.post_callback(
                prediction.webhook_url, body, {"Content-Type": "application/json"}, self.webhook_retry_delays
            )
