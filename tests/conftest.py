"""Shared fixtures: loopback fakes of Discord and the edit hosts, and the bot wired to them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from storage.db import Database
from storage.store import open_db
from tests import postgres
from tests.fakes.listen import BACKLOG
from tests.fakes.runflow import FakeRunflow


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PgServer]:
    """The session's PostgreSQL server (see tests/postgres.py); skipped when none can be had,
    except in CI, where a backend left untested must fail the run."""
    server, why = postgres.find_server()
    if server is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no PostgreSQL server for the tests: {why}")
        pytest.skip(f"no PostgreSQL server for the tests: {why}")
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres_server: postgres.PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test alone."""
    with postgres.fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a storage-level test keeps its data: each such test runs once on each backend."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'r.db'}"


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    database = await open_db(store_url)
    yield database
    await database.close()


@pytest.fixture(autouse=True)
def _store_for_bots(request: pytest.FixtureRequest) -> Iterator[None]:
    """With RETOUCH_TEST_STORE=postgresql, the bots a test builds (tests/e2e/conftest.py
    `env_for`) keep their data in a fresh PostgreSQL database, made on first use; tests of
    SQLite's own features (`@pytest.mark.sqlite_only`: its online backup) keep the file."""
    if postgres.store_under_test() != "postgresql" or request.node.get_closest_marker("sqlite_only"):
        yield
        return
    with postgres.bot_databases(lambda: request.getfixturevalue("postgres_server")):
        yield


class StaticFiles:
    """A loopback file server for inputs in tests that run without the fake Discord."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def add(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        self.files[name] = (data, content_type)
        return f"{self.base_url}/{name}"

    async def _serve(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[0], content_type=found[1])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=BACKLOG)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def static_files() -> AsyncIterator[StaticFiles]:
    server = StaticFiles()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def runflow() -> AsyncIterator[FakeRunflow]:
    fake = FakeRunflow()
    await fake.start()
    yield fake
    await fake.close()
