"""Notices between the processes sharing a PostgreSQL database: LISTEN/NOTIFY.

A notice is a channel name and a short text (a job id). It is sent with `pg_notify` through
the store, so one sent inside a transaction leaves at the commit, once the row it announces can
be read. It is received on one connection of its own, outside the pool: a pooled connection
forgets its LISTENs each time it goes back, and one held for good would be a slot the pool
lacks. Every process listens, this one too, so a notice reaches the listeners here by the same
path as those of every other process.

That connection can drop (a database restart, a failover, `pg_terminate_backend`) or go silent
(a network that loses packets without a reset): it is probed every `probe_every` seconds (a
probe unanswered as long counts as a drop) and opened again, with backoff, when it drops.
Notices sent while it was down are gone, so once it is back every listener is called once with
an empty payload, which asks it to look at everything its channel covers. An outage is logged
once when it starts and once when it ends. Nothing here raises into the caller: a lost notice
only leaves a look to its usual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeAlias

import asyncpg

from storage.db import Database, database_errors
from storage.postgres import CONNECT_TIMEOUT, PostgresDatabase

log = logging.getLogger(__name__)

Listener = Callable[[str], None]

# The listening connection's name in pg_stat_activity, so an operator can tell it apart.
APPLICATION_NAME = "retouch-notices"
# Seconds before the first attempt to reopen it, doubling with each failure up to the longest.
FIRST_RETRY = 0.5
LONGEST_RETRY = 30.0
# Seconds between probes of the listening connection, and for each probe's answer.
PROBE_EVERY = 30.0
_FAILURES = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
_SEND_FAILURES: tuple[type[BaseException], ...] = (OSError, TimeoutError, *database_errors())

_Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"


class PostgresNotices:
    def __init__(
        self,
        database: PostgresDatabase,
        *,
        first_retry: float = FIRST_RETRY,
        longest_retry: float = LONGEST_RETRY,
        probe_every: float = PROBE_EVERY,
    ) -> None:
        self._database = database
        self._first_retry = first_retry
        self._longest_retry = longest_retry
        self._probe_every = probe_every
        self._listeners: dict[str, list[Listener]] = {}
        self._conn: _Connection | None = None
        # asyncpg runs one statement at a time on a connection: LISTEN and the probe take turns,
        # each within `probe_every` (a silent connection must not hold the others forever).
        self._using = asyncio.Lock()
        self._keeper: asyncio.Task[None] | None = None
        self._first_try = asyncio.Event()

    async def notify(self, channel: str, payload: str = "") -> None:
        """Tell every process's listeners on `channel`, this one's included."""
        try:
            await self._database.fetch_one("SELECT pg_notify(?, ?)", (channel, payload))
        except _SEND_FAILURES as exc:
            log.warning("could not send a %s notice (%s); listeners wait for their next look", channel, exc)

    async def listen(self, channel: str, listener: Listener) -> None:
        """Call `listener` with the payload of every notice on `channel` from now on. The first
        call opens the listening connection and returns once it listens, or once the first
        attempt failed (the connection is then retried in the background)."""
        new = channel not in self._listeners
        self._listeners.setdefault(channel, []).append(listener)
        if self._keeper is None:
            self._first_try = asyncio.Event()
            self._keeper = asyncio.create_task(self._keep(), name="notices")
            await self._first_try.wait()
        elif new:
            await self._attach(channel)

    async def close(self) -> None:
        """Stop listening: no listener is called after this."""
        self._listeners.clear()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*_FAILURES):  # a failed close has already dropped the socket
                await conn.close(timeout=CONNECT_TIMEOUT)

    async def _attach(self, channel: str) -> None:
        conn = self._conn
        if conn is None:
            return  # the keeper listens on every channel when it connects
        try:
            async with self._using:
                async with asyncio.timeout(self._probe_every):
                    await conn.add_listener(channel, self._received)
        except _FAILURES:
            conn.terminate()  # the keeper opens another and listens on every channel there

    async def _keep(self) -> None:
        """Hold a listening connection for as long as this object is open."""
        delay = self._first_retry
        down = False
        while True:
            conn = await self._connect()
            if conn is None:
                if not down:
                    log.warning(
                        "cannot listen for other processes' notices (new edits, host callbacks); "
                        "retrying, and until then they wait for each process's next look"
                    )
                    down = True
                self._first_try.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._longest_retry)
                continue
            delay = self._first_retry
            if down:
                log.info("listening for other processes' notices again; looking at everything once")
                down = False
                self._wake_everyone()
            self._first_try.set()
            await self._watch(conn)
            self._conn = None
            conn.terminate()
            log.warning(
                "lost the connection that listens for other processes' notices; reconnecting, "
                "and until then new edits and host callbacks wait for each process's next look"
            )
            down = True

    async def _connect(self) -> _Connection | None:
        """A connection listening on every channel, or None when one could not be had."""
        try:
            conn = await asyncpg.connect(
                self._database.url,
                timeout=CONNECT_TIMEOUT,
                server_settings={"application_name": APPLICATION_NAME},
            )
        except _FAILURES as exc:
            log.debug("listening connection: %s", exc)
            return None
        try:
            async with self._using:
                self._conn = conn
                async with asyncio.timeout(self._probe_every):
                    for channel in list(self._listeners):
                        await conn.add_listener(channel, self._received)
        except _FAILURES as exc:
            log.debug("listening connection: %s", exc)
            self._conn = None
            conn.terminate()
            return None
        return conn

    async def _watch(self, conn: _Connection) -> None:
        """Until the connection is lost: closed by the server, or silent to a probe."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        while not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_every):
                    await lost.wait()
            if lost.is_set():
                return
            try:
                async with self._using:
                    await conn.fetchval("SELECT 1", timeout=self._probe_every)
            except _FAILURES:
                return

    def _received(
        self,
        _conn: asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any],
        _pid: int,
        channel: str,
        payload: object,
    ) -> None:
        self._call(channel, str(payload))

    def _wake_everyone(self) -> None:
        for channel in list(self._listeners):
            self._call(channel, "")

    def _call(self, channel: str, payload: str) -> None:
        for listener in list(self._listeners.get(channel, ())):
            try:
                listener(payload)
            except Exception:  # one listener's bug must not silence the others or the connection
                log.exception("a listener on %s failed on a notice", channel)


def notices_for(database: Database) -> PostgresNotices | None:
    """Notices shared through `database` where it can carry them (PostgreSQL); None on SQLite."""
    return PostgresNotices(database) if isinstance(database, PostgresDatabase) else None
