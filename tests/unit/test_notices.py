"""LISTEN/NOTIFY wake-ups between processes on one PostgreSQL database (`storage.notices`).

Each "process" is its own store (its own pool) and its own `PostgresNotices` on one fresh
database of the real server. The server drops the listening connection the way an operator or
a failover would (`pg_terminate_backend`, a database closed to connections), and a relay in
front of the server goes silent the way a network that loses packets does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from pydantic import SecretStr

from bot.jobs.wakeups import JOBS, RUNS, LocalWakeups, wakeups_for
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import RunflowSettings
from storage.jobs import JobState
from storage.notices import APPLICATION_NAME, PostgresNotices
from storage.postgres import PostgresDatabase, open_postgres
from storage.store import open_db
from tests.conftest import StaticFiles
from tests.fakes.runflow import FakeRunflow
from tests.images import png
from tests.unit.test_jobs import order, running

T = TypeVar("T")


class Heard:
    """What one listener was called with, in order."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, payload: str) -> None:
        self.payloads.append(payload)
        self._changed.set()

    async def until(self, wanted: str, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while wanted not in self.payloads:
                self._changed.clear()
                await self._changed.wait()


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 10) -> T:
    """Until `check()` gives something: for what only the server or the log can show."""
    deadline = time.monotonic() + timeout
    while (found := await check()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s")
        await asyncio.sleep(0.02)
    return found


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[list[PostgresDatabase]]:
    """Two processes' stores on one database."""
    opened = [await open_postgres(pg_url), await open_postgres(pg_url)]
    yield opened
    for store in opened:
        await store.close()


@contextlib.asynccontextmanager
async def listening(store: PostgresDatabase, **options: float) -> AsyncIterator[PostgresNotices]:
    notices = PostgresNotices(store, **options)
    try:
        yield notices
    finally:
        await notices.close()


def maintenance(url: str) -> str:
    """The server's maintenance database, reachable while the test's one refuses connections."""
    return url.rpartition("/")[0] + "/postgres"


async def admin(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """One statement on the maintenance database."""
    conn = await asyncpg.connect(maintenance(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def kill_listeners(url: str) -> int:
    """The server ends every listening connection on this database, as an operator would."""
    rows = await admin(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
        url.rpartition("/")[2],
        APPLICATION_NAME,
    )
    return len(rows)


async def test_each_process_hears_the_others_and_its_own(stores: list[PostgresDatabase]) -> None:
    first, second = stores
    async with listening(first) as a, listening(second) as b:
        heard = {(name, channel): Heard() for name in "ab" for channel in (JOBS, RUNS)}
        for name, notices in (("a", a), ("b", b)):
            for channel in (JOBS, RUNS):
                await notices.listen(channel, heard[(name, channel)])

        await a.notify(RUNS, "17")
        await b.notify(JOBS, "new")

        for name in "ab":
            await heard[(name, RUNS)].until("17")
            await heard[(name, JOBS)].until("new")
        assert all(len(h.payloads) == 1 for h in heard.values())


async def test_a_killed_listening_connection_comes_back_and_looks_once(
    stores: list[PostgresDatabase], pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = stores
    caplog.set_level(logging.INFO, logger="storage.notices")
    async with listening(first, first_retry=0.05) as a, listening(second) as b:
        runs, jobs = Heard(), Heard()
        await a.listen(RUNS, runs)
        await a.listen(JOBS, jobs)

        assert await kill_listeners(pg_url) == 1
        # Whatever was sent meanwhile was lost: every listener looks at everything once.
        await runs.until("")
        await jobs.until("")
        await b.notify(RUNS, "42")
        await runs.until("42")

    assert runs.payloads == ["", "42"]
    lost = [r for r in caplog.records if r.levelno == logging.WARNING]
    back = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(lost) == 1 and "lost the connection" in lost[0].getMessage()
    assert len(back) == 1


async def test_an_outage_is_logged_once_and_retried_until_it_ends(
    stores: list[PostgresDatabase], pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = stores
    database = pg_url.rpartition("/")[2]
    caplog.set_level(logging.DEBUG, logger="storage.notices")
    async with listening(first, first_retry=0.01, longest_retry=0.05) as a, listening(second) as b:
        jobs = Heard()
        await a.listen(JOBS, jobs)
        await admin(pg_url, f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        try:
            await kill_listeners(pg_url)

            async def failed_attempts() -> int | None:
                count = sum("listening connection:" in r.getMessage() for r in caplog.records)
                return count if count >= 5 else None

            await until(failed_attempts)
            await b.notify(JOBS, "sent while it was down")
        finally:
            await admin(pg_url, f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        await jobs.until("")
        await b.notify(JOBS, "after")
        await jobs.until("after")

    assert jobs.payloads == ["", "after"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class Relay:
    """A TCP relay to the server that can go silent: bytes stop flowing both ways and neither
    end is told, as over a network that drops packets without a reset."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.silenced: list[asyncio.StreamWriter] = []
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence(self) -> None:
        """The connections open now go silent; new ones still pass."""
        for client, server in self._pairs:
            self.silenced += [client, server]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        for client, server in self._pairs:
            client.close()
            server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._pairs.append((writer, upstream_writer))
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if sink not in self.silenced:
                sink.write(data)
                await sink.drain()
        sink.close()  # one end hung up: so does the other


async def test_a_silent_listening_connection_is_found_by_its_probe(
    stores: list[PostgresDatabase], pg_url: str
) -> None:
    first, second = stores
    if "?host=" in pg_url:
        pytest.skip("the server listens on a Unix socket only")
    address = pg_url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = address.rpartition(":")
    relay = Relay(host, int(port))
    await relay.start()
    through_relay = PostgresDatabase(
        first.pool, first.pool, pg_url.replace(address, f"127.0.0.1:{relay.port}")
    )
    try:
        async with listening(through_relay, first_retry=0.05, probe_every=0.3) as a, listening(second) as b:
            runs = Heard()
            await a.listen(RUNS, runs)
            relay.silence()
            await b.notify(RUNS, "lost in the silence")
            await runs.until("")
            await b.notify(RUNS, "7")
            await runs.until("7")
        assert runs.payloads == ["", "7"]
    finally:
        await relay.close()


async def test_a_failing_listener_leaves_the_others_listening(stores: list[PostgresDatabase]) -> None:
    first, _ = stores

    def broken(payload: str) -> None:
        raise ValueError(payload)

    async with listening(first) as a:
        heard = Heard()
        await a.listen(RUNS, broken)
        await a.listen(RUNS, heard)
        await a.notify(RUNS, "1")
        await a.notify(RUNS, "2")
        await heard.until("2")
    assert heard.payloads == ["1", "2"]


async def listeners(url: str) -> int:
    """How many listening connections the server has on this database."""
    rows = await admin(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
        url.rpartition("/")[2],
        APPLICATION_NAME,
    )
    return int(rows[0][0])


async def test_closing_ends_the_listening_connection(stores: list[PostgresDatabase], pg_url: str) -> None:
    first, _ = stores
    notices = PostgresNotices(first)
    await notices.listen(JOBS, Heard())
    assert await listeners(pg_url) == 1
    await notices.close()

    async def none_left() -> bool | None:  # the server lets go of a closed backend just after
        return await listeners(pg_url) == 0 or None

    await until(none_left)


async def test_the_store_decides_how_wakeups_travel(pg_url: str, tmp_path: Path) -> None:
    postgres = await open_db(pg_url)
    sqlite = await open_db(f"sqlite:///{tmp_path}/r.db")
    try:
        assert isinstance(wakeups_for(postgres), PostgresNotices)
        assert isinstance(wakeups_for(sqlite), LocalWakeups)
    finally:
        await postgres.close()
        await sqlite.close()


async def test_after_an_outage_the_holder_polls_each_of_its_runs(
    tmp_path: Path, pg_url: str, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    """A run that ended while notices were lost is polled when they come back, not minutes
    later at its holder's next poll (the host's callback may have been among the lost)."""
    host = RunflowSettings(api_key=SecretStr(runflow.api_key), base_url=runflow.base_url)
    async with running(tmp_path, host, RunflowProvider, store_url=pg_url, poll_interval=600) as harness:
        runflow.hold = True
        job = await harness.submit(order(static_files.add("a.png", png())))
        run = await runflow.wait_for_run()
        await runflow.wait_until(lambda: run.polls >= 1 or None, "the first poll")
        runflow.release()
        await runflow.wait_finished(run.id)

        assert await kill_listeners(pg_url) == 1

        final = await asyncio.wait_for(harness.service.wait_settled(job.id), 10)
        assert final.state is JobState.DONE
        assert run.polls == 2
