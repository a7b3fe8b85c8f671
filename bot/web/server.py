"""The bot's own HTTP server: health, metrics, the hosts' run callbacks, and signed file links.

It may face the internet (hosts must reach `web.public_url`), so nothing a client sends can
hold it for long: connections are bounded in number and in the time to send a request head
(bot.web.connections), callback bodies in size and in time, and callbacks that cannot be verified
in rate, per host. It is still a small server: in front of the internet, put a reverse proxy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from bot.pictures.files import FileStore
from bot.pictures.links import FileLinks
from bot.providers.registry import SPECS
from bot.providers.settings import ProvidersSettings
from bot.providers.spec import CallbackParser, SecretCheck
from bot.runtime.config import WebSettings
from bot.runtime.metrics import CONTENT_TYPE, Metrics
from bot.web.connections import ConnectionGuard
from bot.web.painter import Painter
from bot.web.painter_pages import add_routes as add_painter_routes
from storage.db import Database
from storage.jobs import JobRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """What /healthz reports; the gateway check is a callable so this module knows no Discord."""

    db: Database
    gateway_ready: Callable[[], bool]
    accepting: Callable[[], bool]


@dataclass(frozen=True)
class Exposition:
    """What /metrics serves: the bot's registry, refreshed from the job table on each scrape."""

    metrics: Metrics
    repo: JobRepository


EXPOSITION_KEY = web.AppKey("exposition", Exposition)


HEALTH_KEY = web.AppKey("health", Health)
LIMITS_KEY = web.AppKey("limits", WebSettings)

RunIdParser = Callable[[bytes], str]
"""A host's callback body -> the run id it is about; ValueError when it cannot say."""
Verifier = Callable[[bytes, Mapping[str, str]], bool]


@dataclass(frozen=True)
class CallbackHost:
    parse_run_id: RunIdParser
    verify: Verifier | None
    """None when the host's callbacks cannot be verified (unsigned); they only prompt a poll."""


class TokenBucket:
    """`per_minute` tokens a minute, saving up at most that many: a minute's burst, then the rate."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._per_second = per_minute / 60
        self._clock = clock
        self._tokens = self._capacity
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._per_second)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


@dataclass(frozen=True)
class Callbacks:
    hosts: Mapping[str, CallbackHost]
    on_run_update: Callable[[str, str], Awaitable[bool]]
    # Per host, what callbacks without a valid signature may use; built on first use, from
    # web.unverified_callbacks_per_minute.
    unverified: dict[str, TokenBucket] = field(default_factory=dict)


CALLBACKS_KEY = web.AppKey("callbacks", Callbacks)


def _refuse(request: web.Request, host: str, reason: str, status: int, error: str) -> web.Response:
    exposition = request.app.get(EXPOSITION_KEY)
    if exposition is not None:
        exposition.metrics.callbacks_refused.labels(host, reason).inc()
    return web.json_response({"error": error}, status=status)


def _allowed_unverified(request: web.Request, host: str) -> bool:
    """Whether `host` may have one more callback that no signature vouches for.

    Such a callback only prompts a poll (the job polls anyway), so refusing it delays nothing
    by more than a poll interval, while answering every one would let anyone make the bot
    query its database, and write a log line, as fast as they can send.
    """
    buckets = request.app[CALLBACKS_KEY].unverified
    if host not in buckets:
        buckets[host] = TokenBucket(request.app[LIMITS_KEY].unverified_callbacks_per_minute)
    return buckets[host].take()


async def _body(request: web.Request) -> bytes:
    """The whole body (read to its end, however it is chunked), within the size and time limits.

    Raises HTTPRequestEntityTooLarge beyond web.max_body_bytes, TimeoutError past web.body_timeout.
    """
    limits = request.app[LIMITS_KEY]
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(limits.max_body_bytes, request.content_length)
    async with asyncio.timeout(limits.body_timeout):
        return await request.read()


async def callback(request: web.Request) -> web.Response:
    """Answer fast and idempotently: verify, find the run, wake its poll; never trust the body.

    A verified callback is never refused for its rate; only the unverified share an allowance.
    """
    callbacks = request.app[CALLBACKS_KEY]
    host_name = request.match_info["host"]
    host = callbacks.hosts.get(host_name)
    if host is None:
        return web.json_response({"error": "unknown host"}, status=404)
    if host.verify is None and not _allowed_unverified(request, host_name):
        return _refuse(request, host_name, "rate_limited", 429, "too many callbacks; slow down")
    try:
        raw = await _body(request)
    except web.HTTPRequestEntityTooLarge:
        return _refuse(request, host_name, "too_large", 413, "body too large")
    except TimeoutError:
        return _refuse(request, host_name, "too_slow", 408, "the body took too long to arrive")
    if host.verify is not None and not host.verify(raw, request.headers):
        if not _allowed_unverified(request, host_name):
            return _refuse(request, host_name, "rate_limited", 429, "too many callbacks; slow down")
        log.warning(
            "rejected a %s callback with a missing or wrong signature from %s", host_name, request.remote
        )
        return _refuse(request, host_name, "bad_signature", 401, "bad signature")
    try:
        run_id = host.parse_run_id(raw)
    except ValueError as exc:
        log.warning("rejected an unreadable %s callback: %s", host_name, exc)
        return _refuse(request, host_name, "unreadable", 400, "unreadable body")
    known = await callbacks.on_run_update(host_name, run_id)
    if not known:
        log.info(
            "%s callback for run %s matches no running edit (late, repeated or unknown)", host_name, run_id
        )
    return web.json_response({"ok": True})


async def _database_ok(db: Database) -> bool:
    try:
        return await db.ping()
    except Exception:  # any failure means "not healthy"; the reason is logged
        log.exception("health check: database query failed")
        return False


async def healthz(request: web.Request) -> web.Response:
    health = request.app[HEALTH_KEY]
    database = await _database_ok(health.db)
    gateway = health.gateway_ready()
    body = {
        "status": "ok" if database and gateway else "degraded",
        "database": "ok" if database else "error",
        "gateway": "ready" if gateway else "connecting",
        "accepting_edits": health.accepting(),
    }
    return web.json_response(body, status=200 if database and gateway else 503)


@dataclass(frozen=True)
class Served:
    """Kept input files, reachable only through signed links (see bot.pictures.links)."""

    links: FileLinks
    files: FileStore


SERVED_KEY = web.AppKey("served", Served)


async def served_file(request: web.Request) -> web.StreamResponse:
    served = request.app[SERVED_KEY]
    job_id, name = request.match_info["job_id"], request.match_info["name"]
    expires, signature = request.query.get("exp", ""), request.query.get("sig", "")
    if not served.links.valid(int(job_id), name, expires, signature):
        return web.json_response({"error": "no such file, or the link has expired"}, status=404)
    # A pruned file is a plain 404 from FileResponse.
    return web.FileResponse(served.files.job_dir(int(job_id)) / name)


async def metrics(request: web.Request) -> web.Response:
    exposition = request.app[EXPOSITION_KEY]
    body = await exposition.metrics.render(exposition.repo)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def build_app(
    health: Health,
    callbacks: Callbacks | None = None,
    exposition: Exposition | None = None,
    served: Served | None = None,
    painter: Painter | None = None,
    *,
    limits: WebSettings,
) -> web.Application:
    app = web.Application(client_max_size=limits.max_body_bytes)
    app[HEALTH_KEY] = health
    app[LIMITS_KEY] = limits
    app.router.add_get("/healthz", healthz)
    if exposition is not None:
        app[EXPOSITION_KEY] = exposition
        app.router.add_get("/metrics", metrics)
    if served is not None:
        app[SERVED_KEY] = served
        # ASCII digits only: str.isdigit() would also take other scripts' digits, which int() refuses.
        app.router.add_get("/files/{job_id:[0-9]{1,20}}/{name}", served_file)
    if painter is not None:
        add_painter_routes(app, painter)
    if callbacks is not None:
        app[CALLBACKS_KEY] = callbacks
        app.router.add_post("/callbacks/{host}", callback)
    return app


class WebServer:
    """The app on `web.host:web.port`, its connections admitted through a ConnectionGuard.

    It listens itself rather than through an aiohttp site, because the guard has to choose
    the protocol for each new connection.
    """

    def __init__(self, app: web.Application, settings: WebSettings) -> None:
        self.guard = ConnectionGuard(settings.max_connections, settings.header_timeout)
        app.middlewares.append(self.guard.middleware)
        self._runner = web.AppRunner(app)
        self._host = settings.host
        self._port = settings.port
        self._listener: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        assert self._runner.server is not None
        self._listener = await asyncio.get_running_loop().create_server(
            self.guard.protocol_factory(self._runner.server), self._host, self._port
        )
        self.port = int(self._listener.sockets[0].getsockname()[1])
        log.info("web server listening on %s:%s", self._host, self.port)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        # Closes the connections still open, then the app.
        await self._runner.cleanup()
        if self._listener is not None:
            await self._listener.wait_closed()


def _run_id(parse: CallbackParser) -> RunIdParser:
    return lambda raw: parse(raw)[0]


def _verifier(check: SecretCheck, secret: str) -> Verifier:
    return lambda raw, headers: check(raw, headers, secret)


def callback_hosts(settings: ProvidersSettings) -> dict[str, CallbackHost]:
    """The configured hosts that call back, each with its parser and, with a secret, its check
    (both from the host's spec)."""
    hosts: dict[str, CallbackHost] = {}
    for name in settings.order:
        spec = SPECS[name]
        if spec.parse_callback is None:
            continue
        secret = getattr(settings, name).callback_secret
        check = spec.check_callback
        verify = _verifier(check, secret.get_secret_value()) if check and secret else None
        hosts[name] = CallbackHost(_run_id(spec.parse_callback), verify)
    return hosts
