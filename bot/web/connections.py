"""How many connections the web server holds, and which one makes way when it is full.

aiohttp on its own accepts every connection and keeps one that never finishes its request head
for an hour, so a few hundred idle sockets exhaust the process's file descriptors: /healthz
stops answering and even deliveries to Discord fail with "Too many open files". Two bounds fix
that, with no reverse proxy required:

- time: aiohttp's keep-alive timer, set to `web.header_timeout`, closes a connection that has
  not sent a whole request head that long after connecting or after its previous response;
- count: `ConnectionGuard` holds at most `web.max_connections`. At the limit a newcomer is let
  in by closing the held connection that has waited longest without a request being served
  (a half-sent head, or an idle keep-alive), so a flood of idle sockets can delay a real client
  by one eviction but never lock it out. When every held connection is being served, the
  newcomer gets a 503 and is closed at once.

Requests being served are bounded by the handlers themselves (a callback's body by
`web.body_timeout`), so a connection is only "busy" for as long as a handler runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b'Retry-After: 1\r\nContent-Length: 51\r\n\r\n{"error": "the server is busy; try again shortly."}'
)


class _Refused(asyncio.Protocol):
    """A connection let in only to be told the server is busy; it holds nothing afterwards."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class _Connection(web.RequestHandler):
    """aiohttp's protocol for one connection, which tells the guard when it is gone."""

    def __init__(self, guard: ConnectionGuard, server: web.Server, header_timeout: float) -> None:
        super().__init__(
            server,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=header_timeout,
            access_log=None,  # type: ignore[arg-type]  # aiohttp's own way to say "no access log"
        )
        self._guard = guard

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.release(self)
        super().connection_lost(exc)


class ConnectionGuard:
    def __init__(self, limit: int, header_timeout: float) -> None:
        self._limit = limit
        self._header_timeout = header_timeout
        # Insertion order is admission order, so the first idle entry is the longest waiting.
        self._held: dict[web.RequestHandler, None] = {}
        self._serving: set[web.RequestHandler] = set()

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        def admit() -> asyncio.Protocol:
            if len(self._held) >= self._limit:
                victim = next((held for held in self._held if self._idle(held)), None)
                if victim is None:
                    return _Refused()
                # Forgotten now, so the next newcomer evicts the next one; its socket closes
                # on the loop's next turn.
                self.release(victim)
                victim.force_close()
            connection = _Connection(self, server, self._header_timeout)
            self._held[connection] = None
            return connection

        return admit

    def _idle(self, connection: web.RequestHandler) -> bool:
        # A connection still being set up has no transport yet, and nothing to close.
        return connection.transport is not None and connection not in self._serving

    def release(self, connection: web.RequestHandler) -> None:
        self._held.pop(connection, None)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the connection as being served, so it is never the one that makes way."""
        connection = request.protocol
        self._serving.add(connection)
        try:
            return await handler(request)
        finally:
            self._serving.discard(connection)
