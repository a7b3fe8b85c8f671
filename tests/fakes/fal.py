"""An in-process fake of fal's queue API for `openai/gpt-image-2/edit`, and the loopback server
base (`LoopbackFake`) that the each::labs and OpenAI fakes share.

The fal fake follows the documented queue (see the shared research notes, providers.md, section 1):

- ``POST /{model}`` (``Authorization: Key ...``, input at the top level, optional
  ``?fal_webhook=``) answers ``{request_id, gateway_request_id, status_url, response_url,
  cancel_url, queue_position}``; those URLs name the app *without* the endpoint sub-path
  (``/openai/gpt-image-2/requests/{id}``), so a client that rebuilds them from the model id
  gets 404s,
- ``GET .../requests/{id}/status`` answers 202 while IN_QUEUE (with ``queue_position``) or
  IN_PROGRESS and 200 once COMPLETED (with ``metrics`` and, for a failed run, ``error`` and
  ``error_type``),
- ``GET .../requests/{id}`` answers the model output, or the model's error body for a failed run,
- ``PUT .../requests/{id}/cancel`` answers OK (queued), CANCELLATION_REQUESTED (running),
  ALREADY_COMPLETED (400) or NOT_FOUND (404),
- invalid input is ``422 {"detail": [{"loc", "msg", "type"}]}``; a bad key is 401; the model's
  documented input rules (fal.ai/models/openai/gpt-image-2/edit/llms.txt) are kept: ``prompt``
  2 to 32,000 characters, 1-16 ``image_urls``, ``num_images`` 1-4,
- ``image_size`` is a preset or ``{"width", "height"}``; a custom size must meet GPT Image 2's
  limits (``custom_size_problem``) and the outputs are then exactly that size; a preset below
  the model's 655,360-pixel minimum (``square`` 512x512, the 16:9 ones 1024x576) is refused like
  a custom one, and the others (and ``auto``) give small 32x24 outputs,
- the output is what the model's page documents, ``images[]`` of ``{url, content_type,
  file_name, file_size, width, height}`` and nothing else (no seed, NSFW flag or token usage).

Runs wait IN_QUEUE while ``queue_paused`` is set, then run for ``delay`` seconds (or until
``release()`` while ``hold`` is set). A webhook, when asked for, is POSTed to a loopback URL
only, retried on 5xx/network errors after ``webhook_retry_delays``. It carries fal's request,
user and timestamp headers but no ``X-Fal-Webhook-Signature``: that needs Ed25519, and the
``cryptography`` package is not installed.

ASSUMPTIONS of the fake (not documented): the HTTP statuses of the cancel answers, the body of a
result fetched before the run finished, that a cancelled queued run ends COMPLETED with
``error_type: "request_cancelled"``, that fal refuses a size outside the model's limits (custom
or preset) at submit (422) rather than failing the run or making it anyway, and the ``type``
strings of its 422 entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.listen import BACKLOG
from tests.fakes.runflow import RecordedRequest, is_loopback_url
from tests.images import png

__all__ = ["FakeFal", "FalRequest", "LoopbackFake", "WebhookSink", "custom_size_problem"]

_T = TypeVar("_T")

KNOWN_MODEL = "openai/gpt-image-2/edit"
IMAGE_SIZES = (
    "auto",
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
)
QUALITIES = ("low", "medium", "high")
OUTPUT_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# The outputs' size when a valid preset was asked for: small, so tests stay fast.
PRESET_OUTPUT = (32, 24)
# fal's documented preset sizes, for the model's pixel limits.
PRESET_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
MIN_PROMPT, MAX_PROMPT = 2, 32_000


def custom_size_problem(width: int, height: int) -> str | None:
    """What is wrong with a GPT Image 2 size, per providers.md: both edges multiples of 16, the
    long edge at most 3840, the aspect within 1:3..3:1, 655,360 to 8,294,400 pixels."""
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        return "both edges must be positive multiples of 16"
    if max(width, height) > 3840:
        return "the long edge must be at most 3840 pixels"
    if max(width, height) > 3 * min(width, height):
        return "the aspect ratio must be between 1:3 and 3:1"
    if not 655_360 <= width * height <= 8_294_400:
        return "the image must have between 655,360 and 8,294,400 pixels"
    return None


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(payload).encode(), content_type="application/json", headers=headers
    )


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    kind: Literal["fail", "hang", "reset"]
    times: int
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in (method, "*") and self.pattern.search(path) is not None


class LoopbackFake:
    """A fake host on 127.0.0.1: records requests, injects faults, holds runs, serves files.

    Fault injection runs before auth and routing: the first rule whose method matches (``"*"``
    matches any) and whose regex is found in the path answers instead of the host.
    Subclasses implement ``route`` and ``error_body``.
    """

    def __init__(self, *, api_key: str, delay: float = 0.0) -> None:
        self.api_key = api_key
        self.delay = delay
        self.requests: list[RecordedRequest] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        self.callbacks_sent: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._hold = False
        self._waiting: set[str] = set()
        self._released: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._base_url: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, backlog=BACKLOG).start()
        host, port = self._runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), trust_env=False)

    async def close(self) -> None:
        self._closing.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._base_url

    # ------------------------------------------------------------------ test controls

    @property
    def hold(self) -> bool:
        """While True, work waits for ``release()`` instead of finishing after ``delay``."""
        return self._hold

    @hold.setter
    def hold(self, value: bool) -> None:
        self._hold = value
        self.notify()

    def release(self, key: str | None = None) -> None:
        """Let held work finish: one piece by key, or everything waiting now."""
        self._released.update(self._waiting if key is None else {key})
        self.notify()

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next matching requests with ``status``: bytes are sent raw (for malformed
        JSON), None becomes the host's own error body, anything else is JSON."""
        if isinstance(body, bytes):
            raw = body
        else:
            raw = json.dumps(
                self.error_body(status, f"Injected HTTP {status}") if body is None else body
            ).encode()
        self._add(method, path_regex, "fail", times, status=status, body=raw, headers=headers)

    def rate_limit_next(
        self, method: str, path_regex: str, retry_after: float | None = 1.0, *, times: int = 1
    ) -> None:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.fail_next(
            method, path_regex, 429, self.error_body(429, "Rate limit exceeded"), headers=headers, times=times
        )

    def hang_next(self, method: str, path_regex: str, seconds: float, *, times: int = 1) -> None:
        """Handle the next matching requests normally but hold each answer ``seconds``."""
        self._add(method, path_regex, "hang", times, seconds=seconds)

    def reset_next(self, method: str, path_regex: str, *, times: int = 1) -> None:
        """Drop the connection without an answer (aiohttp retries an idempotent GET once)."""
        self._add(method, path_regex, "reset", times)

    def _add(
        self,
        method: str,
        path_regex: str,
        kind: Literal["fail", "hang", "reset"],
        times: int,
        *,
        status: int = 0,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        seconds: float = 0.0,
    ) -> None:
        self._faults.append(
            _Fault(
                method.upper(),
                re.compile(path_regex),
                kind,
                times,
                status,
                body,
                dict(headers or {}),
                seconds,
            )
        )

    def add_file(self, data: bytes, content_type: str, extension: str) -> str:
        name = f"{uuid.uuid4().hex}.{extension}"
        self.files[name] = (data, content_type)
        return f"{self.base_url}/files/{name}"

    # ------------------------------------------------------------------ waiting

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, check: Callable[[], _T | None], what: str, timeout: float | None = 10) -> _T:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    result = check()
                    if result is not None:
                        return result
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{type(self).__name__}: timed out waiting for {what}") from None

    async def wait_callbacks(self, count: int = 1) -> list[dict[str, Any]]:
        return await self.wait_until(
            lambda: self.callbacks_sent if len(self.callbacks_sent) >= count else None,
            f"{count} callback attempt(s)",
        )

    async def work(self, key: str) -> None:
        """Simulate the host's own latency: ``delay`` seconds, or until released while held."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.delay
        self._waiting.add(key)
        self.notify()
        try:
            while key not in self._released:
                remaining = deadline - loop.time()
                if not self._hold and remaining <= 0:
                    return
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), None if self._hold else remaining)
        finally:
            self._waiting.discard(key)

    def waiting(self) -> set[str]:
        return set(self._waiting)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ callbacks

    async def post_callback(
        self, url: str, body: bytes, headers: dict[str, str], delays: tuple[float, ...]
    ) -> None:
        """POST ``body`` to a loopback ``url``, retrying 5xx and network errors after ``delays``."""
        entry: dict[str, Any] = {"url": url, "body": body, "headers": headers, "status": None}
        if not is_loopback_url(url):
            self.callbacks_sent.append({**entry, "error": "refused: not a loopback URL"})
            self.notify()
            return
        assert self._session is not None
        for attempt in range(len(delays) + 1):
            if attempt:
                await asyncio.sleep(delays[attempt - 1])
            status: int | None = None
            try:
                async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.callbacks_sent.append({**entry, "error": repr(exc)})
            else:
                self.callbacks_sent.append({**entry, "status": status})
            self.notify()
            if status is not None and status < 500:
                return

    # ------------------------------------------------------------------ HTTP

    def error_body(self, status: int, message: str) -> Any:
        raise NotImplementedError

    async def route(self, request: web.Request, raw: bytes) -> web.Response:
        raise NotImplementedError

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        parsed: Any = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(raw) if raw else None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=CIMultiDict(request.headers),
            json=parsed,
            status=None,
            time=time.monotonic(),
            query=dict(request.query),
            body=raw,
        )
        self.requests.append(record)
        self.notify()
        fault = next((f for f in self._faults if f.matches(request.method, request.path)), None)
        if fault is not None:
            fault.times -= 1
            if fault.times == 0:
                self._faults.remove(fault)
        if fault is not None and fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPInternalServerError  # never written: the connection is gone
        if fault is not None and fault.kind == "fail":
            response = web.Response(
                status=fault.status, body=fault.body, content_type="application/json", headers=fault.headers
            )
        elif request.method == "GET" and (m := re.fullmatch(r"/files/([0-9a-f]+\.[a-z]+)", request.path)):
            stored = self.files.get(m.group(1))
            response = (
                web.Response(status=404)
                if stored is None
                else web.Response(body=stored[0], content_type=stored[1])
            )
        else:
            response = await self.route(request, raw)
        if fault is not None and fault.kind == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.seconds)
        record.status = response.status
        self.notify()
        return response

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class WebhookSink:
    """A loopback endpoint that keeps what is POSTed to it; answers ``statuses`` in turn, then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self._statuses = list(statuses)
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._arrived:
            self.received.append((body, dict(request.headers)))
            self._arrived.notify_all()
        return web.Response(status=self._statuses.pop(0) if self._statuses else 200)

    async def wait(self, count: int = 1) -> list[tuple[bytes, dict[str, str]]]:
        async with asyncio.timeout(10), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    async def __aenter__(self) -> WebhookSink:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, backlog=BACKLOG).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class FalRequest:
    """A queued request as the fake keeps it."""

    id: str
    app: str
    input: dict[str, Any]
    webhook_url: str | None
    status: str = "IN_QUEUE"
    output: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    error_status: int = 422
    error_body: Any = None
    inference_time: float | None = None
    cancel_requested: bool = False
    fail_with: dict[str, Any] | None = field(default=None, repr=False)
    empty_output: bool = field(default=False, repr=False)


def _detail(loc: str, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", loc], "msg": msg, "type": kind}


def _custom_size(size: dict[str, Any]) -> tuple[int, int] | None:
    """The width and height of fal's custom-size form, None when they are not two integers."""
    width, height = size.get("width"), size.get("height")
    if size.keys() == {"width", "height"} and type(width) is int and type(height) is int:
        return width, height
    return None


def _validate(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return [_detail("body", "input must be an object", "type_error.dict")]
    errors: list[dict[str, Any]] = []
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        errors.append(_detail("prompt", "field required", "value_error.missing"))
    elif not MIN_PROMPT <= len(prompt) <= MAX_PROMPT:
        errors.append(
            _detail(
                "prompt", f"must be {MIN_PROMPT} to {MAX_PROMPT} characters", "value_error.any_str.length"
            )
        )
    urls = body.get("image_urls")
    if not isinstance(urls, list) or not 1 <= len(urls) <= 16:
        errors.append(_detail("image_urls", "between 1 and 16 image URLs are required", "value_error"))
    elif not all(isinstance(url, str) and url.startswith(("http://", "https://", "data:")) for url in urls):
        errors.append(_detail("image_urls", "must be URLs or data URIs", "value_error.url"))
    num = body.get("num_images", 1)
    if not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= 4:
        errors.append(_detail("num_images", "must be between 1 and 4", "value_error.number"))
    size = body.get("image_size", "auto")
    if isinstance(size, dict):
        custom = _custom_size(size)
        problem = "width and height must be integers" if custom is None else custom_size_problem(*custom)
        if problem is not None:
            errors.append(_detail("image_size", problem, "value_error"))
    elif size not in IMAGE_SIZES:
        errors.append(_detail("image_size", "not a preset or {width, height}", "value_error.const"))
    elif size in PRESET_SIZES and (problem := custom_size_problem(*PRESET_SIZES[size])) is not None:
        errors.append(_detail("image_size", f"{size}: {problem}", "value_error"))
    if body.get("quality", "high") not in QUALITIES:
        errors.append(_detail("quality", "must be low, medium or high", "value_error.const"))
    if body.get("output_format", "png") not in OUTPUT_FORMATS:
        errors.append(_detail("output_format", "must be png, jpeg or webp", "value_error.const"))
    return errors


class FakeFal(LoopbackFake):
    """The fake fal queue (see the module docstring)."""

    webhook_retry_delays: tuple[float, ...] = (0.0, 0.0)

    def __init__(self, *, api_key: str = "fal-test-key", delay: float = 0.0) -> None:
        super().__init__(api_key=api_key, delay=delay)
        self.queue: dict[str, FalRequest] = {}
        self.order: list[FalRequest] = []
        # Read when a request is submitted: {"status", "detail", "error_type"} makes it fail.
        self.fail_runs: dict[str, Any] | None = None
        self.empty_output = False
        self._queue_paused = False

    @property
    def queue_paused(self) -> bool:
        """While True, new requests stay IN_QUEUE."""
        return self._queue_paused

    @queue_paused.setter
    def queue_paused(self, value: bool) -> None:
        self._queue_paused = value
        self.notify()

    def error_body(self, status: int, message: str) -> Any:
        return {"detail": message}

    async def wait_status(self, request_id: str, *statuses: str) -> FalRequest:
        return await self.wait_until(
            lambda: req if (req := self.queue.get(request_id)) and req.status in statuses else None,
            f"request {request_id} to reach {statuses}",
        )

    def _urls(self, req: FalRequest) -> dict[str, str]:
        base = f"{self.base_url}/{req.app}/requests/{req.id}"
        return {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}

    def _queue_position(self, req: FalRequest) -> int:
        return [r for r in self.order if r.status == "IN_QUEUE"].index(req)

    async def route(self, request: web.Request, raw: bytes) -> web.Response:
        if request.headers.get("Authorization") != f"Key {self.api_key}":
            return json_response(401, {"detail": "Invalid or missing API key"})
        path = request.path
        if m := re.fullmatch(r"/(.+)/requests/([^/]+)(/status|/cancel)?", path):
            req = self.queue.get(m.group(2))
            if req is None or req.app != m.group(1):
                return json_response(404, {"detail": "Request not found", "status": "NOT_FOUND"})
            action = m.group(3)
            if request.method == "GET" and action == "/status":
                return self._status(req)
            if request.method == "GET" and action is None:
                return self._result(req)
            if request.method == "PUT" and action == "/cancel":
                return self._cancel(req)
            return json_response(405, {"detail": "Method not allowed"})
        if request.method != "POST":
            return json_response(404, {"detail": "Not found"})
        return self._submit(path.lstrip("/"), raw, request.query.get("fal_webhook"))

    def _submit(self, model: str, raw: bytes, webhook_url: str | None) -> web.Response:
        if model != KNOWN_MODEL:
            return json_response(404, {"detail": f"Application {model!r} not found"})
        try:
            body = json.loads(raw)
        except ValueError:
            return json_response(400, {"detail": "Request body is not valid JSON"})
        errors = _validate(body)
        if errors:
            return json_response(422, {"detail": errors})
        req = FalRequest(
            id=str(uuid.uuid4()),
            app="/".join(model.split("/")[:2]),
            input=body,
            webhook_url=webhook_url,
            fail_with=dict(self.fail_runs) if self.fail_runs is not None else None,
            empty_output=self.empty_output,
        )
        self.queue[req.id] = req
        self.order.append(req)
        self.spawn(self._lifecycle(req), f"fal-{req.id}")
        self.notify()
        reply = {"request_id": req.id, "gateway_request_id": str(uuid.uuid4()), **self._urls(req)}
        return json_response(200, {**reply, "queue_position": self._queue_position(req)})

    def _status(self, req: FalRequest) -> web.Response:
        body: dict[str, Any] = {"status": req.status, "response_url": self._urls(req)["response_url"]}
        if req.status == "IN_QUEUE":
            return json_response(202, {**body, "queue_position": self._queue_position(req)})
        if req.status == "IN_PROGRESS":
            return json_response(202, {**body, "logs": None})
        body["metrics"] = {"inference_time": req.inference_time}
        if req.error is not None:
            body.update(error=req.error, error_type=req.error_type)
        return json_response(200, body)

    def _result(self, req: FalRequest) -> web.Response:
        if req.status != "COMPLETED":
            return json_response(400, {"detail": "Request is still in progress"})
        if req.error is not None:
            return json_response(req.error_status, req.error_body)
        return json_response(200, req.output)

    def _cancel(self, req: FalRequest) -> web.Response:
        if req.status == "COMPLETED":
            return json_response(400, {"status": "ALREADY_COMPLETED"})
        req.cancel_requested = True
        self.release(req.id)
        self.notify()
        return json_response(202, {"status": "OK" if req.status == "IN_QUEUE" else "CANCELLATION_REQUESTED"})

    async def _lifecycle(self, req: FalRequest) -> None:
        await self.wait_until(
            lambda: True if not self._queue_paused or req.cancel_requested else None, "the queue", None
        )
        if self._end_if_cancelled(req):
            return
        req.status = "IN_PROGRESS"
        self.notify()
        started = time.monotonic()
        await self.work(req.id)
        req.inference_time = round(time.monotonic() - started, 3)
        if not self._end_if_cancelled(req):
            self._finish(req)
        if req.webhook_url is not None:
            await self._send_webhook(req)

    def _finish(self, req: FalRequest) -> None:
        if req.fail_with is None:
            self._succeed(req)
            return
        status = int(req.fail_with.get("status", 422))
        detail = req.fail_with.get("detail", [_detail("prompt", "failed", "internal_error")])
        self._finish_error(req, status, {"detail": detail}, req.fail_with.get("error_type"))

    def _end_if_cancelled(self, req: FalRequest) -> bool:
        if req.cancel_requested:
            self._finish_error(req, 400, {"detail": "Request was cancelled"}, "request_cancelled")
        return req.cancel_requested

    def _finish_error(self, req: FalRequest, status: int, body: Any, error_type: str | None) -> None:
        req.error = f"Invalid status code: {status}"
        req.error_type = error_type
        req.error_status = status
        req.error_body = body
        req.status = "COMPLETED"
        self.notify()

    def _succeed(self, req: FalRequest) -> None:
        fmt = req.input.get("output_format", "png")
        count = 0 if req.empty_output else int(req.input.get("num_images", 1))
        size = req.input.get("image_size")
        width, height = (size["width"], size["height"]) if isinstance(size, dict) else PRESET_OUTPUT
        data = png(width, height)  # one flat colour: cheap to make and to send even at 4K
        images = []
        for _ in range(count):
            url = self.add_file(data, OUTPUT_FORMATS[fmt], fmt)
            images.append(
                {
                    "url": url,
                    "content_type": OUTPUT_FORMATS[fmt],
                    "file_name": url.rsplit("/", 1)[-1],
                    "file_size": len(data),
                    "width": width,
                    "height": height,
                }
            )
        req.output = {"images": images}
        req.status = "COMPLETED"
        self.notify()

    async def _send_webhook(self, req: FalRequest) -> None:
        assert req.webhook_url is not None
        common = {"request_id": req.id, "gateway_request_id": str(uuid.uuid4())}
        if req.error is None:
            payload = {**common, "status": "OK", "payload": req.output}
        else:
            payload = {**common, "status": "ERROR", "error": req.error, "payload": req.error_body}
        headers = {
            "Content-Type": "application/json",
            "X-Fal-Webhook-Request-Id": req.id,
            "X-Fal-Webhook-User-Id": "fake-user",
            "X-Fal-Webhook-Timestamp": str(int(time.time())),
        }
        await self.post_callback(
            req.webhook_url, json.dumps(payload).encode(), headers, self.webhook_retry_delays
        )
