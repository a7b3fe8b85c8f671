"""Shared fixtures: loopback fakes of Discord and the edit hosts, and the bot wired to them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.fakes.runflow import FakeRunflow


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
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
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
