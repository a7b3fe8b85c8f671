"""The bot's own HTTP server: health, metrics, the hosts' run callbacks, and signed file links."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiosqlite
from aiohttp import web

from bot.config import ProvidersSettings
from bot.files import FileStore
from bot.links import FileLinks
from bot.metrics import CONTENT_TYPE, Metrics
from bot.providers.callbacks import (
    parse_eachlabs_webhook,
    parse_fal_webhook,
    parse_runflow_callback,
    verify_runflow,
)
from storage.jobs import JobRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """What /healthz reports; the gateway check is a callable so this module knows no Discord."""

    db: aiosqlite.Connection
    gateway_ready: Callable[[], bool]
    accepting: Callable[[], bool]


@dataclass(frozen=True)
class Exposition:
    """What /metrics serves: the bot's registry, refreshed from the job table on each scrape."""

    metrics: Metrics
    repo: JobRepository


EXPOSITION_KEY = web.AppKey("exposition", Exposition)


HEALTH_KEY = web.AppKey("health", Health)

MAX_CALLBACK_BYTES = 1024 * 1024
RunIdParser = Callable[[bytes], str]
"""A host's callback body -> the run id it is about; ValueError when it cannot say."""
Verifier = Callable[[bytes, Mapping[str, str]], bool]


@dataclass(frozen=True)
class CallbackHost:
    parse_run_id: RunIdParser
    verify: Verifier | None
    """None when the host's callbacks cannot be verified (unsigned); they only prompt a poll."""


@dataclass(frozen=True)
class Callbacks:
    hosts: Mapping[str, CallbackHost]
    on_run_update: Callable[[str, str], Awaitable[bool]]


CALLBACKS_KEY = web.AppKey("callbacks", Callbacks)


async def callback(request: web.Request) -> web.Response:
    """Answer fast and idempotently: verify, find the run, wake its poll; never trust the body."""
    callbacks = request.app[CALLBACKS_KEY]
    host_name = request.match_info["host"]
    host = callbacks.hosts.get(host_name)
    if host is None:
        return web.json_response({"error": "unknown host"}, status=404)
    if request.content_length is not None and request.content_length > MAX_CALLBACK_BYTES:
        return web.json_response({"error": "body too large"}, status=413)
    raw = await request.content.read(MAX_CALLBACK_BYTES + 1)
    if len(raw) > MAX_CALLBACK_BYTES:
        return web.json_response({"error": "body too large"}, status=413)
    if host.verify is not None and not host.verify(raw, request.headers):
        log.warning(
            "rejected a %s callback with a missing or wrong signature from %s", host_name, request.remote
        )
        return web.json_response({"error": "bad signature"}, status=401)
    try:
        run_id = host.parse_run_id(raw)
    except ValueError as exc:
        log.warning("rejected an unreadable %s callback: %s", host_name, exc)
        return web.json_response({"error": "unreadable body"}, status=400)
    known = await callbacks.on_run_update(host_name, run_id)
    if not known:
        log.info(
            "%s callback for run %s matches no running edit (late, repeated or unknown)", host_name, run_id
        )
    return web.json_response({"ok": True})


async def _database_ok(db: aiosqlite.Connection) -> bool:
    try:
        async with db.execute("SELECT 1") as cursor:
            await cursor.fetchone()
    except Exception:  # any failure means "not healthy"; the reason is logged
        log.exception("health check: database query failed")
        return False
    return True


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
    """Kept input files, reachable only through signed links (see bot.links)."""

    links: FileLinks
    files: FileStore


SERVED_KEY = web.AppKey("served", Served)


async def served_file(request: web.Request) -> web.StreamResponse:
    served = request.app[SERVED_KEY]
    job_id, name = request.match_info["job_id"], request.match_info["name"]
    expires, signature = request.query.get("exp", ""), request.query.get("sig", "")
    if not job_id.isdigit() or not served.links.valid(int(job_id), name, expires, signature):
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
) -> web.Application:
    app = web.Application(client_max_size=MAX_CALLBACK_BYTES)
    app[HEALTH_KEY] = health
    app.router.add_get("/healthz", healthz)
    if exposition is not None:
        app[EXPOSITION_KEY] = exposition
        app.router.add_get("/metrics", metrics)
    if served is not None:
        app[SERVED_KEY] = served
        app.router.add_get("/files/{job_id}/{name}", served_file)
    if callbacks is not None:
        app[CALLBACKS_KEY] = callbacks
        app.router.add_post("/callbacks/{host}", callback)
    return app


class WebServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("web server listening on %s:%s", self._host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()


def _runflow_verifier(secret: str) -> Verifier:
    return lambda raw, headers: verify_runflow(raw, headers, secret)


def callback_hosts(settings: ProvidersSettings) -> dict[str, CallbackHost]:
    """The configured hosts that call back, each with its parser and, with a secret, its check."""
    parsers: dict[str, RunIdParser] = {
        "runflow": lambda raw: parse_runflow_callback(raw)[0],
        "fal": lambda raw: parse_fal_webhook(raw)[0],
        "eachlabs": lambda raw: parse_eachlabs_webhook(raw)[0],
    }
    hosts: dict[str, CallbackHost] = {}
    for name in settings.order:
        if name not in parsers:
            continue
        secret = getattr(settings, name).callback_secret
        verify = _runflow_verifier(secret.get_secret_value()) if name == "runflow" and secret else None
        hosts[name] = CallbackHost(parsers[name], verify)
    return hosts
