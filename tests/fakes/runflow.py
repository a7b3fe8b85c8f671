"""An in-process fake of the Runflow API (runflow.io) for the `openai/gpt-image-2/edit` model.

It serves the documented endpoints on a random port of 127.0.0.1 so the product's Runflow client
can be tested against the documented behaviour (see the shared research notes, providers.md, section 3):

- ``POST /v1/models/{model_id}/runs`` creates a run (201, ``status_code: "queued"``),
- ``GET /v1/runs/{id}`` returns the run object (counts polls),
- ``GET /files/{uuid}.{ext}?sig=...`` serves outputs like presigned URLs (no auth),
- ``GET /v1/health`` answers ``{"status": "ok"}`` (no auth),
- anything else is ``404 {"code": "NOT_FOUND"}`` -- there is no public cancel endpoint.

Every run is an asyncio task: queued -> dispatching -> running -> (after ``delay``, or
``release()`` while ``hold`` is set) fetch the input images -> succeeded | partial_succeeded |
failed. A run reports its ``cost`` in USD as a string, as the run schema documents it
(docs.runflow.io/api-reference/runs/get-run: ``"cost": "<string>"``). When the run has a
``callback_url`` the fake POSTs the documented callback (concepts/callbacks: ``event`` one of
run.completed, run.failed, run.cancelled, run.partial_succeeded; ``status`` the run's
``status_code``; ``output`` the normalized output, the error envelope on failure, null when
cancelled), signed with HMAC-SHA256 when a ``callback_secret`` is set, and retries on
5xx/network errors after ``callback_retry_delays``.

The fake never talks to anything but loopback addresses: input image URLs and callback URLs on
other hosts are refused without opening a connection.

Fault injection (``fail_next``, ``rate_limit_next``, ``hang_next``, ``reset_next``) runs before auth
and routing. A rule matches when the method is equal (or the rule's method is ``"*"``) and
``re.search(path_regex, path)`` finds a match in the path without its query; the first matching
rule with uses left is applied. ``fail_runs``, ``nsfw``, ``empty_output`` and ``partial_images``
are read when a run is created; ``callback_mode`` when its callback is sent; ``honour_mask`` (off:
the whole picture is repainted) when the outputs are made, and then only ``mask_url``'s white
pixels change. With ``partial_images`` set, a run asked for more images than that makes only that
many and ends ``partial_succeeded`` (ASSUMPTION, undocumented: its output lists only the images
made, and its ``cost`` prices only those).

Inputs may be URLs or inline ``data:`` URIs ("Inline base64 fine under 1 MiB", guides/upload-large-files).

Typical use::

    async with FakeRunflow(callback_secret="whsec_x") as fake:
        client = RunflowClient(base_url=fake.base_url, api_key=fake.api_key)
        ...
        run = await fake.wait_for_run()
        await fake.wait_finished(run.id)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import ipaddress
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from PIL import Image, ImageOps
from yarl import URL

from tests.fakes.listen import BACKLOG

__all__ = [
    "KNOWN_MODEL",
    "PRICE_PER_IMAGE",
    "FakeRun",
    "FakeRunflow",
    "RecordedRequest",
    "expected_output_image",
]

log = logging.getLogger(__name__)

KNOWN_MODEL: Final = "openai/gpt-image-2/edit"
PRICE_PER_IMAGE: Final[dict[str, float]] = {"low": 0.009, "medium": 0.034, "high": 0.133}

MAX_PROMPT_CHARS: Final = 20_000
MAX_IMAGE_URLS: Final = 16
MAX_NUM_IMAGES: Final = 4
MAX_INPUT_SIDE: Final = 4096
MAX_INPUT_BYTES: Final = 50 * 1024 * 1024
QUALITIES: Final = ("low", "medium", "high")
IMAGE_SIZES: Final = (
    "square_hd",
    "square",
    "portrait_4_3",
    "portrait_16_9",
    "landscape_4_3",
    "landscape_16_9",
    "auto",
)
OUTPUT_FORMATS: Final[dict[str, tuple[str, str, str]]] = {
    # output_format -> (Pillow format, file extension, content type)
    "png": ("PNG", "png", "image/png"),
    "jpeg": ("JPEG", "jpg", "image/jpeg"),
    "webp": ("WEBP", "webp", "image/webp"),
}
TERMINAL_STATUSES: Final = frozenset({"succeeded", "failed", "canceled", "partial_succeeded"})
# Tints blended into outputs 1..3 so that the outputs of one run differ (output 0 is a pure invert).
_TINTS: Final = ((255, 0, 0), (0, 160, 0), (0, 0, 255))

_T = TypeVar("_T")
CallbackMode = Literal["normal", "never", "twice", "forged"]


@dataclass
class RecordedRequest:
    """One HTTP request the fake received (recorded on arrival, ``status`` set once answered)."""

    method: str
    path: str
    headers: CIMultiDict[str]
    json: Any
    status: int | None
    time: float
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class FakeRun:
    """A run as the fake stores it; ``to_api()`` is what ``GET /v1/runs/{id}`` returns."""

    id: str
    model_id: str
    input: dict[str, Any]
    callback_url: str | None
    metadata: dict[str, Any] | None
    client_ref: str | None
    status_code: str = "queued"
    output: dict[str, Any] | None = None
    created_at: str = ""
    started_at: str | None = None
    completed_at: str | None = None
    duration_ms: int | None = None
    cost: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    failure_stage_code: str | None = None
    polls: int = 0
    # Names of the files this run produced (keys of FakeRunflow.files).
    files: list[str] = field(default_factory=list)
    # Behaviour snapshotted from the fake when the run was created.
    fail_with: dict[str, Any] | None = field(default=None, repr=False)
    nsfw: bool = field(default=False, repr=False)
    empty_output: bool = field(default=False, repr=False)
    partial_images: int | None = field(default=None, repr=False)
    released: bool = field(default=False, repr=False)
    started_monotonic: float | None = field(default=None, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status_code in TERMINAL_STATUSES

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model_id": self.model_id,
            "status_code": self.status_code,
            "input": self.input,
            "output": self.output,
            "metadata": self.metadata,
            "client_ref": self.client_ref,
            "callback_url": self.callback_url,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "duration_ms": self.duration_ms,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "failure_stage_code": self.failure_stage_code,
            "cost": self.cost,
        }


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


class _InputError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _envelope(code: str, message: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "errors": errors or []}


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


def _default_code(status: int) -> str:
    return {
        400: "BAD_REQUEST",
        401: "UNAUTHORIZED",
        402: "INSUFFICIENT_CREDIT",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "CONFLICT",
        422: "VALIDATION_ERROR",
        429: "RATE_LIMITED",
        503: "MODEL_UNAVAILABLE",
    }.get(status, "INTERNAL_ERROR" if status >= 500 else "ERROR")


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs whose host is ``localhost`` or a loopback IP literal."""
    try:
        parsed = URL(url)
    except ValueError:
        return False
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return False
    host = parsed.host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def expected_output_image(source: Image.Image, index: int = 0) -> Image.Image:
    """The fake's deterministic edit: invert the first input (as RGB); outputs 1..3 are also tinted."""
    inverted = ImageOps.invert(source.convert("RGB"))
    if index == 0:
        return inverted
    tint = Image.new("RGB", inverted.size, _TINTS[(index - 1) % len(_TINTS)])
    return Image.blend(inverted, tint, 0.35)


def _validate_input(data: Any) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []

    def err(name: str, message: str) -> None:
        errors.append({"field": f"input.{name}", "message": message})

    if not isinstance(data, dict):
        return [{"field": "input", "message": "input must be an object"}]

    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        err("prompt", "prompt is required and must be a string")
    elif not prompt.strip():
        err("prompt", "prompt must not be empty")
    elif len(prompt) > MAX_PROMPT_CHARS:
        err("prompt", f"prompt must be at most {MAX_PROMPT_CHARS} characters")

    urls = data.get("image_urls")
    if not isinstance(urls, list):
        err("image_urls", "image_urls is required and must be a list of URLs")
    elif not 1 <= len(urls) <= MAX_IMAGE_URLS:
        err("image_urls", f"image_urls must contain between 1 and {MAX_IMAGE_URLS} URLs")
    else:
        for i, url in enumerate(urls):
            if not isinstance(url, str) or not (_is_http_url(url) or url.startswith("data:image/")):
                errors.append({"field": f"input.image_urls.{i}", "message": "must be an http(s) or data URL"})

    mask = data.get("mask_url")
    if mask is not None and not isinstance(mask, str):
        err("mask_url", "mask_url must be a string")

    num = data.get("num_images")
    if num is not None and (
        not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= MAX_NUM_IMAGES
    ):
        err("num_images", f"num_images must be an integer between 1 and {MAX_NUM_IMAGES}")

    for name, allowed in (
        ("quality", QUALITIES),
        ("image_size", IMAGE_SIZES),
        ("output_format", tuple(OUTPUT_FORMATS)),
    ):
        value = data.get(name)
        if value is not None and value not in allowed:
            err(name, f"{name} must be one of: {', '.join(allowed)}")

    sync_mode = data.get("sync_mode")
    if sync_mode is not None and not isinstance(sync_mode, bool):
        err("sync_mode", "sync_mode must be a boolean")
    return errors


def _is_http_url(value: str) -> bool:
    try:
        parsed = URL(value)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


class FakeRunflow:
    """A fake Runflow API server on 127.0.0.1 (see the module docstring)."""

    # Delays before callback retries 1..3 (4 attempts in all). Tests may shrink them per instance.
    callback_retry_delays: tuple[float, ...] = (1.0, 2.0, 4.0)
    # Per-attempt timeout of a callback POST; a timeout counts as a network error (retried).
    callback_timeout: float = 5.0

    def __init__(
        self, *, api_key: str = "rf-test-key", callback_secret: str | None = None, delay: float = 0.0
    ) -> None:
        self.api_key = api_key
        self.callback_secret = callback_secret
        self.delay = delay
        self.runs: dict[str, FakeRun] = {}
        # The most runs that were unfinished at once, for tests of a limit on runs at the host.
        self.most_at_once = 0
        self.requests: list[RecordedRequest] = []
        self.callbacks_sent: list[dict[str, Any]] = []
        # name -> (bytes, content type); served at /files/{name}?sig=...
        self.files: dict[str, tuple[bytes, str]] = {}
        self.fail_runs: dict[str, Any] | None = None
        self.nsfw = False
        self.empty_output = False
        self.partial_images: int | None = None
        self.honour_mask = False
        self.callback_mode: CallbackMode = "normal"
        self._hold = False
        self._run_order: list[FakeRun] = []
        self._faults: list[_Fault] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._file_key = secrets.token_bytes(32)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._base_url: str | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeRunflow already started")
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=MAX_INPUT_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=BACKLOG)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), trust_env=False, auto_decompress=True
        )

    async def close(self) -> None:
        self._closing.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeRunflow:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeRunflow is not started")
        return self._base_url

    # ------------------------------------------------------------------ test controls

    @property
    def hold(self) -> bool:
        """When True, runs stay ``running`` until ``release()`` (then, or when hold is cleared,
        they finish once ``delay`` has elapsed since they started running)."""
        return self._hold

    @hold.setter
    def hold(self, value: bool) -> None:
        self._hold = value
        self._notify()

    def release(self, run_id: str | None = None) -> None:
        """Finish a held (or delayed) run now; without ``run_id`` every run not yet finished."""
        if run_id is None:
            targets = [run for run in self._run_order if not run.terminal]
        else:
            targets = [self.runs[run_id]]
        for run in targets:
            run.released = True
        self._notify()

    def cancel_run(self, run_id: str) -> FakeRun:
        """Operator-side cancel (the API has none): the run ends ``canceled`` and, if it has a
        callback_url, a ``run.cancelled`` callback is sent. No-op on a finished run."""
        run = self.runs[run_id]
        if run.terminal:
            return run
        for task in list(self._tasks):
            if task.get_name() == f"runflow-run-{run_id}":
                task.cancel()
        self._finish(run, "canceled")
        return run

    def expire_files(self) -> None:
        """Make every output URL served so far answer 404 (presigned URLs are time-limited)."""
        self.files.clear()

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: dict[str, Any] | bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` and ``body`` (dict -> JSON,
        bytes -> sent raw as application/json, None -> the error envelope for the status)."""
        if body is None:
            raw = json.dumps(_envelope(_default_code(status), f"Injected HTTP {status}")).encode()
        elif isinstance(body, bytes):
            raw = body
        else:
            raw = json.dumps(body).encode()
        self._add_fault(method, path_regex, "fail", times, status=status, body=raw, headers=headers)

    def rate_limit_next(
        self, method: str, path_regex: str, retry_after: float | None = 1.0, *, times: int = 1
    ) -> None:
        """Answer the next ``times`` matching requests with 429 RATE_LIMITED (+ Retry-After)."""
        payload = _envelope("RATE_LIMITED", "Rate limit exceeded: too many requests, retry later")
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self._add_fault(
            method, path_regex, "fail", times, status=429, body=json.dumps(payload).encode(), headers=headers
        )

    def hang_next(self, method: str, path_regex: str, seconds: float, *, times: int = 1) -> None:
        """Handle the next ``times`` matching requests normally but hold the response ``seconds``."""
        self._add_fault(method, path_regex, "hang", times, seconds=seconds)

    def reset_next(self, method: str, path_regex: str, *, times: int = 1) -> None:
        """Drop the connection of the next ``times`` matching requests without any response.

        Note: aiohttp clients transparently retry idempotent requests (GET) once after a dropped
        connection, so use ``times=2`` to make a GET fail for them."""
        self._add_fault(method, path_regex, "reset", times)

    def _add_fault(
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
        if times < 1:
            raise ValueError("times must be >= 1")
        self._faults.append(
            _Fault(
                method=method.upper(),
                pattern=re.compile(path_regex),
                kind=kind,
                times=times,
                status=status,
                body=body,
                headers=dict(headers or {}),
                seconds=seconds,
            )
        )

    # ------------------------------------------------------------------ waiting
    # (the `timeout` parameters are part of the agreed test API, hence the ASYNC109 waivers)

    async def wait_for_run(self, *, count: int = 1, timeout: float = 10) -> FakeRun:
        """The ``count``-th run created (1-based), waiting for it to be created."""
        return await self._wait_until(
            lambda: self._run_order[count - 1] if len(self._run_order) >= count else None,
            timeout,
            f"run #{count} to be created",
        )

    async def wait_finished(self, run_id: str, timeout: float = 10) -> FakeRun:
        """Wait until the run is terminal (succeeded, partial_succeeded, failed or canceled)."""
        return await self.wait_status(run_id, *TERMINAL_STATUSES, timeout=timeout)

    async def wait_status(self, run_id: str, *statuses: str, timeout: float = 10) -> FakeRun:
        """Wait until the run's ``status_code`` is one of ``statuses``."""

        def check() -> FakeRun | None:
            run = self.runs.get(run_id)
            return run if run is not None and run.status_code in statuses else None

        return await self._wait_until(check, timeout, f"run {run_id} to reach {sorted(statuses)}")

    async def wait_callbacks(self, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
        """Wait until ``count`` callback attempts have been made; returns ``callbacks_sent``."""
        return await self._wait_until(
            lambda: self.callbacks_sent if len(self.callbacks_sent) >= count else None,
            timeout,
            f"{count} callback attempt(s)",
        )

    async def wait_idle(self, timeout: float = 10) -> None:
        """Wait until no run is in flight and every callback delivery (with retries) is over."""
        try:
            async with asyncio.timeout(timeout):
                while self._tasks:
                    await asyncio.wait(list(self._tasks))
        except TimeoutError:
            raise TimeoutError(f"FakeRunflow: timed out after {timeout} s waiting to be idle") from None

    async def wait_until(self, check: Callable[[], _T | None], what: str, timeout: float = 10) -> _T:
        """Until `check` returns something other than None (re-checked on every request and change);
        the same signature as the other hosts' fakes, so tests can treat hosts alike."""
        return await self._wait_until(check, timeout, what)

    async def _wait_until(self, check: Callable[[], _T | None], timeout: float, what: str) -> _T:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    result = check()
                    if result is not None:
                        return result
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(f"FakeRunflow: timed out after {timeout} s waiting for {what}") from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        parsed: Any = None
        if raw:
            with contextlib.suppress(ValueError):
                parsed = json.loads(raw)
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
        self._notify()

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
        else:
            response = self._route(request, raw)
        if fault is not None and fault.kind == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.seconds)
        record.status = response.status
        self._notify()
        return response

    def _route(self, request: web.Request, raw: bytes) -> web.Response:
        method, path = request.method, request.path
        if method == "GET" and path == "/v1/health":
            return _json(200, {"status": "ok"})
        if method == "GET" and (m := re.fullmatch(r"/files/([0-9a-f-]+\.[a-z]+)", path)):
            return self._serve_file(m.group(1), request.query.get("sig", ""))
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _json(401, _envelope("UNAUTHORIZED", "Missing or invalid API key"))
        if method == "POST" and (m := re.fullmatch(r"/v1/models/(.+)/runs", path)):
            return self._create_run(m.group(1), raw)
        if method == "GET" and (m := re.fullmatch(r"/v1/runs/([^/]+)", path)):
            run = self.runs.get(m.group(1))
            if run is None:
                return _json(404, _envelope("RUN_NOT_FOUND", f"Run {m.group(1)} not found"))
            run.polls += 1
            return _json(200, run.to_api())
        return _json(404, _envelope("NOT_FOUND", f"No route for {method} {path}"))

    def _serve_file(self, name: str, sig: str) -> web.Response:
        if not hmac.compare_digest(sig, self._file_sig(name)):
            return _json(403, _envelope("FORBIDDEN", "Invalid or missing signature"))
        stored = self.files.get(name)
        if stored is None:
            return _json(404, _envelope("NOT_FOUND", "File not found or expired"))
        data, content_type = stored
        return web.Response(status=200, body=data, content_type=content_type)

    def _file_sig(self, name: str) -> str:
        return hmac.new(self._file_key, name.encode(), hashlib.sha256).hexdigest()[:32]

    def _create_run(self, model_id: str, raw: bytes) -> web.Response:
        try:
            body = json.loads(raw)
        except ValueError:
            return _json(400, _envelope("BAD_REQUEST", "Request body is not valid JSON"))
        if not isinstance(body, dict):
            return _json(400, _envelope("BAD_REQUEST", "Request body must be a JSON object"))
        if model_id != KNOWN_MODEL:
            return _json(404, _envelope("MODEL_NOT_FOUND", f"Model {model_id} not found"))

        errors: list[dict[str, str]] = []
        if "input" not in body:
            errors.append({"field": "input", "message": "input is required"})
        else:
            errors.extend(_validate_input(body["input"]))
        callback_url = body.get("callback_url")
        if callback_url is not None and (not isinstance(callback_url, str) or not _is_http_url(callback_url)):
            errors.append({"field": "callback_url", "message": "callback_url must be an http(s) URL"})
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            errors.append({"field": "metadata", "message": "metadata must be an object"})
        client_ref = body.get("client_ref")
        if client_ref is not None and not isinstance(client_ref, str):
            errors.append({"field": "client_ref", "message": "client_ref must be a string"})
        if errors:
            message = f"Validation failed: {errors[0]['field']}: {errors[0]['message']}"
            return _json(422, _envelope("VALIDATION_ERROR", message, errors))

        run = FakeRun(
            id=str(uuid.uuid4()),
            model_id=model_id,
            input=body["input"],
            callback_url=callback_url,
            metadata=metadata,
            client_ref=client_ref,
            created_at=_now_iso(),
            fail_with=dict(self.fail_runs) if self.fail_runs is not None else None,
            nsfw=self.nsfw,
            empty_output=self.empty_output,
            partial_images=self.partial_images,
        )
        self.runs[run.id] = run
        self.most_at_once = max(self.most_at_once, sum(not known.terminal for known in self.runs.values()))
        self._run_order.append(run)
        self._spawn(self._lifecycle(run), f"runflow-run-{run.id}")
        self._notify()
        return _json(201, run.to_api())

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ run lifecycle

    async def _lifecycle(self, run: FakeRun) -> None:
        try:
            await asyncio.sleep(0)
            self._set_status(run, "dispatching")
            await asyncio.sleep(0)
            run.started_at = _now_iso()
            run.started_monotonic = time.monotonic()
            self._set_status(run, "running")
            await self._wait_release(run)
            if run.fail_with is not None:
                self._fail(
                    run,
                    str(run.fail_with.get("failure_code", "PROVIDER_ERROR")),
                    str(run.fail_with.get("failure_message", "The model provider returned an error")),
                    str(run.fail_with.get("failure_stage_code", "inference")),
                )
                return
            try:
                sources = await self._fetch_inputs(run)
            except _InputError as exc:
                self._fail(run, exc.code, exc.message, "preprocess")
                return
            mask = sources[-1] if self.honour_mask and isinstance(run.input.get("mask_url"), str) else None
            await self._succeed(run, sources[0], mask)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("FakeRunflow: run %s crashed", run.id)
            if not run.terminal:
                self._fail(run, "INTERNAL_ERROR", f"fake crashed: {exc!r}", "inference")

    async def _wait_release(self, run: FakeRun) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.delay
        while not run.released:
            remaining = deadline - loop.time()
            if not self._hold and remaining <= 0:
                return
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), None if self._hold else remaining)

    def _set_status(self, run: FakeRun, status: str) -> None:
        run.status_code = status
        self._notify()

    async def _fetch_inputs(self, run: FakeRun) -> list[Image.Image]:
        urls: list[tuple[str, str]] = [
            (f"image_urls[{i}]", url) for i, url in enumerate(run.input["image_urls"])
        ]
        if isinstance(run.input.get("mask_url"), str):
            urls.append(("mask_url", run.input["mask_url"]))
        for label, url in urls:
            if not is_loopback_url(url) and not url.startswith("data:"):
                raise _InputError(
                    "INPUT_FETCH_FAILED", f"{label}: refusing to fetch non-loopback URL {url!r} (fake)"
                )
        return [await self._fetch_image(label, url) for label, url in urls]

    async def _fetch_image(self, label: str, url: str) -> Image.Image:
        assert self._session is not None
        try:
            if url.startswith("data:"):
                data = base64.b64decode(url.partition(",")[2], validate=True)
            else:
                async with self._session.get(url, allow_redirects=False) as resp:
                    if resp.status != 200:
                        raise _InputError(
                            "INPUT_VALIDATION_FAILED", f"{label}: could not fetch image (HTTP {resp.status})"
                        )
                    # StreamReader.read(n) returns what has arrived so far, not n bytes: read to EOF.
                    data = b""
                    async for chunk in resp.content.iter_chunked(64 * 1024):
                        data += chunk
                        if len(data) > MAX_INPUT_BYTES:
                            break
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise _InputError("INPUT_VALIDATION_FAILED", f"{label}: could not fetch image ({exc!r})") from exc
        if len(data) > MAX_INPUT_BYTES:
            raise _InputError("INPUT_VALIDATION_FAILED", f"{label}: image is too large")
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width > MAX_INPUT_SIDE or height > MAX_INPUT_SIDE:
                raise _InputError(
                    "INPUT_VALIDATION_FAILED",
                    f"image dimensions exceed {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE}",
                )
            image.load()
        except _InputError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise _InputError("INPUT_VALIDATION_FAILED", f"{label}: not a valid image") from exc
        return image

    async def _succeed(self, run: FakeRun, source: Image.Image, mask: Image.Image | None = None) -> None:
        fmt = run.input.get("output_format") or "png"
        pil_format, ext, content_type = OUTPUT_FORMATS[fmt]
        asked = int(run.input.get("num_images") or 1)
        count = 0 if run.empty_output else min(asked, run.partial_images or asked)
        encoded = await asyncio.to_thread(_encode_outputs, source, count, pil_format, mask)
        outputs: list[dict[str, Any]] = []
        for data in encoded:
            if run.input.get("sync_mode") is True:
                url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
            else:
                name = f"{uuid.uuid4()}.{ext}"
                self.files[name] = (data, content_type)
                run.files.append(name)
                url = f"{self.base_url}/files/{name}?sig={self._file_sig(name)}"
            outputs.append(
                {
                    "type": "image",
                    "url": url,
                    "content_type": content_type,
                    "width": source.width,
                    "height": source.height,
                }
            )
        inference = time.monotonic() - run.started_monotonic if run.started_monotonic is not None else 0.0
        run.output = {
            "outputs": outputs,
            "image_urls": [o["url"] for o in outputs],
            "seed": int.from_bytes(hashlib.sha256(run.id.encode()).digest()[:4], "big") >> 1,
            "timing": {"inference": round(inference, 3)},
            "nsfw_detected": run.nsfw,
        }
        quality = run.input.get("quality") or "high"
        run.cost = str(round(PRICE_PER_IMAGE[quality] * len(outputs), 6))
        self._finish(run, "partial_succeeded" if 0 < count < asked else "succeeded")

    def _fail(self, run: FakeRun, code: str, message: str, stage: str) -> None:
        run.failure_code = code
        run.failure_message = message
        run.failure_stage_code = stage
        self._finish(run, "failed")

    def _finish(self, run: FakeRun, status: str) -> None:
        run.completed_at = _now_iso()
        if run.started_monotonic is not None:
            run.duration_ms = int((time.monotonic() - run.started_monotonic) * 1000)
        else:
            run.duration_ms = 0
        self._set_status(run, status)
        if run.callback_url is not None:
            self._spawn(self._deliver_callback(run), f"runflow-callback-{run.id}")

    # ------------------------------------------------------------------ callbacks

    def _callback_payload(self, run: FakeRun) -> dict[str, Any]:
        event, output = {
            "succeeded": ("run.completed", run.output),
            "partial_succeeded": ("run.partial_succeeded", run.output),
            "failed": ("run.failed", _envelope(run.failure_code or "", run.failure_message or "")),
            "canceled": ("run.cancelled", None),
        }[run.status_code]
        return {
            "event": event,
            "run_id": run.id,
            "status": run.status_code,
            "output": output,
            "duration_ms": run.duration_ms,
            "created_at": run.created_at,
            "completed_at": run.completed_at,
            "metadata": run.metadata,
        }

    def sign(self, body: bytes, secret: str | None = None) -> str:
        """The ``Runflow-Signature`` value for ``body``: hex HMAC-SHA256 keyed by the secret string."""
        key = secret if secret is not None else self.callback_secret
        if key is None:
            raise ValueError("no callback secret")
        return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()

    async def _deliver_callback(self, run: FakeRun) -> None:
        mode = self.callback_mode
        if mode == "never" or run.callback_url is None:
            return
        url = run.callback_url
        body = json.dumps(self._callback_payload(run)).encode()
        headers = {"Content-Type": "application/json", "Runflow-Request-Id": str(uuid.uuid4())}
        if mode == "forged":
            headers["Runflow-Signature"] = self.sign(body, "forged-" + (self.callback_secret or "secret"))
        elif self.callback_secret is not None:
            headers["Runflow-Signature"] = self.sign(body)
        if not is_loopback_url(url):
            log.warning("FakeRunflow: refusing to send a callback to non-loopback URL %s", url)
            self._record_callback(url, None, body, headers, error="refused: non-loopback callback URL")
            return
        for _ in range(2 if mode == "twice" else 1):
            await self._deliver_once(url, body, headers)

    async def _deliver_once(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        assert self._session is not None
        delays = self.callback_retry_delays
        for attempt in range(len(delays) + 1):
            if attempt:
                await asyncio.sleep(delays[attempt - 1])
            status: int | None = None
            error: str | None = None
            try:
                async with self._session.post(
                    url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.callback_timeout),
                ) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = repr(exc)
            self._record_callback(url, status, body, headers, error=error)
            if status is not None and status < 500:
                return

    def _record_callback(
        self, url: str, status: int | None, body: bytes, headers: dict[str, str], *, error: str | None
    ) -> None:
        entry: dict[str, Any] = {"url": url, "status": status, "body": body, "headers": dict(headers)}
        if error is not None:
            entry["error"] = error
        self.callbacks_sent.append(entry)
        self._notify()


def _encode_outputs(
    source: Image.Image, count: int, pil_format: str, mask: Image.Image | None = None
) -> list[bytes]:
    """The outputs; with a mask, only its white pixels are edited and the rest is the source."""
    result: list[bytes] = []
    for index in range(count):
        buffer = io.BytesIO()
        edited = expected_output_image(source, index)
        if mask is not None:
            edited = Image.composite(edited, source.convert("RGB"), mask.convert("L").resize(source.size))
        edited.save(buffer, format=pil_format)
        result.append(buffer.getvalue())
    return result
