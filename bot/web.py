"""The bot's own HTTP server: health for Docker and monitors (later: metrics and host callbacks)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite
from aiohttp import web

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """What /healthz reports; the gateway check is a callable so this module knows no Discord."""

    db: aiosqlite.Connection
    gateway_ready: Callable[[], bool]
    accepting: Callable[[], bool]


HEALTH_KEY = web.AppKey("health", Health)


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


def build_app(health: Health) -> web.Application:
    app = web.Application()
    app[HEALTH_KEY] = health
    app.router.add_get("/healthz", healthz)
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
