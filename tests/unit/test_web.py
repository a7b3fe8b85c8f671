"""The bot's HTTP server on a real loopback socket: callbacks are verified, idempotent and
never trusted for the outcome; signed file links cannot be forged."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from bot.pictures.files import FileStore
from bot.pictures.links import FileLinks
from bot.providers.settings import ProvidersSettings, RunflowSettings
from bot.runtime.config import WebSettings
from bot.runtime.metrics import Metrics
from bot.web.server import (
    Callbacks,
    Exposition,
    Health,
    Served,
    TokenBucket,
    WebServer,
    build_app,
    callback_hosts,
)
from storage.jobs import JobRepository
from storage.store import open_db

SECRET = "whsec_test"
LIMITS = WebSettings(body_timeout=0.5, unverified_callbacks_per_minute=5)


class Updates:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, host: str, run_id: str) -> bool:
        self.calls.append((host, run_id))
        return run_id == "known"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[TestServer, Updates, FileLinks, FileStore]]:
    db = await open_db(tmp_path / "r.db")
    settings = ProvidersSettings(
        order=["runflow", "fal", "eachlabs"],
        runflow=RunflowSettings(api_key=SecretStr("k"), callback_secret=SecretStr(SECRET)),
    )
    updates = Updates()
    links = FileLinks("http://127.0.0.1")
    files = FileStore(tmp_path / "files")
    app = build_app(
        Health(db, gateway_ready=lambda: True, accepting=lambda: True),
        Callbacks(callback_hosts(settings), updates),
        Exposition(Metrics(), JobRepository(db)),
        Served(links, files),
        limits=LIMITS,
    )
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    yield test_server, updates, links, files
    await test_server.close()
    await db.close()


def runflow_body(run_id: str) -> bytes:
    return json.dumps(
        {"event": "run.completed", "run_id": run_id, "status": "succeeded", "output": {}}
    ).encode()


def signed(body: bytes) -> dict[str, str]:
    return {"Runflow-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}


async def post(test_server: TestServer, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(test_server.make_url(path), data=body, headers=headers) as response,
    ):
        return response.status


async def test_a_signed_callback_wakes_its_run_and_a_forged_one_is_refused(server) -> None:
    test_server, updates, _, _ = server
    body = runflow_body("known")
    assert await post(test_server, "/callbacks/runflow", body, signed(body)) == 200
    assert await post(test_server, "/callbacks/runflow", body, {"Runflow-Signature": "0" * 64}) == 401
    assert await post(test_server, "/callbacks/runflow", body) == 401
    tampered = runflow_body("other")
    assert await post(test_server, "/callbacks/runflow", tampered, signed(body)) == 401
    assert updates.calls == [("runflow", "known")]


async def test_repeated_late_and_unreadable_callbacks(server) -> None:
    test_server, updates, _, _ = server
    body = runflow_body("known")
    for _ in range(3):
        assert await post(test_server, "/callbacks/runflow", body, signed(body)) == 200
    late = runflow_body("finished-long-ago")
    assert await post(test_server, "/callbacks/runflow", late, signed(late)) == 200
    assert await post(test_server, "/callbacks/runflow", b"{not json", signed(b"{not json")) == 400
    assert await post(test_server, "/callbacks/nowhere", body) == 404
    assert await post(test_server, "/callbacks/runflow", b"x" * (2 * 1024 * 1024)) == 413
    # Each delivery only prompts a poll; the host's own API decides what happened, once.
    assert updates.calls == [("runflow", "known")] * 3 + [("runflow", "finished-long-ago")]


async def test_unsigned_hosts_only_prompt_a_poll(server) -> None:
    test_server, updates, _, _ = server
    body = json.dumps({"request_id": "known", "status": "OK", "payload": {"images": []}}).encode()
    assert await post(test_server, "/callbacks/fal", body) == 200
    assert updates.calls == [("fal", "known")]


async def test_file_links_serve_kept_inputs_only_when_signed(server) -> None:
    test_server, _, links, files = server
    await files.write(files.job_dir(5) / "input-0.png", b"png bytes")
    good = links.url_for(5, "input-0.png").replace("http://127.0.0.1", "")
    async with aiohttp.ClientSession() as session:
        async with session.get(test_server.make_url(good)) as response:
            assert response.status == 200 and await response.read() == b"png bytes"
        forged = good.rsplit("sig=", 1)[0] + "sig=" + "0" * 64
        async with session.get(test_server.make_url(forged)) as response:
            assert response.status == 404
        async with session.get(
            test_server.make_url("/files/5/..%2F..%2Fr.db?exp=9999999999&sig=x")
        ) as response:
            assert response.status == 404
        # Other scripts' digits pass str.isdigit() but not int(): a 404, not a 500.
        for job in ("%C2%B2", "%D9%A1", "9" * 5000):
            async with session.get(test_server.make_url(f"/files/{job}/input-0.png?exp=1&sig=x")) as response:
                assert response.status == 404, job


async def test_health_answers_json(server) -> None:
    test_server, _, _, _ = server
    async with aiohttp.ClientSession() as session, session.get(test_server.make_url("/healthz")) as response:
        assert response.status == 200
        assert (await response.json())["database"] == "ok"


def fal_body(run_id: str) -> bytes:
    return json.dumps({"request_id": run_id, "status": "OK", "payload": {"images": []}}).encode()


async def send_raw(port: int, head: bytes, parts: list[bytes], pause: float) -> bytes:
    """A client that sends the request head, then the body in parts with a pause after each,
    and returns the status line (b"" when the server closed without answering)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        async with asyncio.timeout(5):
            return await reader.readline()
    finally:
        writer.close()


def post_head(path: str, length: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_chunked_body_over_the_limit_gets_413(server) -> None:
    test_server, updates, _, _ = server

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(48):
            yield b"x" * 65536

    async with (
        aiohttp.ClientSession() as session,
        session.post(test_server.make_url("/callbacks/fal"), data=chunks()) as response,
    ):
        assert response.status == 413
    assert updates.calls == []


async def test_a_slowly_sent_callback_is_read_whole(server) -> None:
    test_server, updates, _, _ = server
    body = runflow_body("known")
    head = post_head("/callbacks/runflow", len(body), signed(body))
    status = await send_raw(test_server.port, head, [body[:20], body[20:]], pause=0.2)
    assert status.startswith(b"HTTP/1.1 200"), status
    assert updates.calls == [("runflow", "known")]


async def test_a_body_that_stalls_gets_408(server) -> None:
    test_server, updates, _, _ = server
    body = runflow_body("known")
    head = post_head("/callbacks/runflow", len(body), signed(body))
    status = await send_raw(test_server.port, head, [body[:20]], pause=0)
    assert status.startswith(b"HTTP/1.1 408"), status
    assert updates.calls == []


async def refused_count(test_server: TestServer, host: str, reason: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(test_server.make_url("/metrics")) as response:
        text = await response.text()
    wanted = f'retouch_callbacks_refused_total{{host="{host}",reason="{reason}"}} '
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted)), 0.0)


async def test_unverified_callbacks_are_rate_limited_per_host(server) -> None:
    test_server, updates, _, _ = server
    statuses = [await post(test_server, "/callbacks/fal", fal_body("known")) for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    each = json.dumps(
        {"exec_id": "known", "flow_id": None, "status": "succeeded", "output": "https://x/y.png", "error": ""}
    ).encode()
    assert await post(test_server, "/callbacks/eachlabs", each) == 200, "each host has its own allowance"
    assert updates.calls == [("fal", "known")] * 5 + [("eachlabs", "known")]
    assert await refused_count(test_server, "fal", "rate_limited") == 3


async def test_forged_signatures_are_rate_limited_but_signed_callbacks_never_are(server) -> None:
    test_server, updates, _, _ = server
    body = runflow_body("known")
    forged = {"Runflow-Signature": "0" * 64}
    statuses = [await post(test_server, "/callbacks/runflow", body, forged) for _ in range(7)]
    assert statuses == [401] * 5 + [429] * 2
    for _ in range(20):
        assert await post(test_server, "/callbacks/runflow", body, signed(body)) == 200
    assert updates.calls == [("runflow", "known")] * 20
    assert await refused_count(test_server, "runflow", "bad_signature") == 5


def test_a_token_bucket_allows_a_burst_then_its_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(60, clock=lambda: now[0])
    assert [bucket.take() for _ in range(61)] == [True] * 60 + [False]
    now[0] += 2.5
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 3600
    assert sum(bucket.take() for _ in range(100)) == 60


class HeldUpdates:
    """Run updates that wait for `release`, so a test can keep requests being served."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, host: str, run_id: str) -> bool:
        self.arrived += 1
        if self.arrived == self.expected:
            self.all_arrived.set()
        await self.release.wait()
        return True


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[WebServer, HeldUpdates]]:
    """The real server class on a loopback port, holding at most 5 connections."""
    db = await open_db(tmp_path / "r.db")
    settings = ProvidersSettings(
        order=["runflow"],
        runflow=RunflowSettings(api_key=SecretStr("k"), callback_secret=SecretStr(SECRET)),
    )
    limits = WebSettings(port=0, max_connections=5, header_timeout=1.5, body_timeout=5)
    updates = HeldUpdates(expected=5)
    app = build_app(
        Health(db, gateway_ready=lambda: True, accepting=lambda: True),
        Callbacks(callback_hosts(settings), updates),
        limits=limits,
    )
    web_server = WebServer(app, limits)
    await web_server.start()
    yield web_server, updates
    await web_server.stop()
    await db.close()


async def half_open(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Connections that send part of a request head and then nothing."""
    held = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        held.append((reader, writer))
    return held


async def healthz_status(port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        return response.status


async def test_a_connection_that_never_finishes_its_head_is_closed(guarded) -> None:
    port = guarded[0].port
    ((reader, writer),) = await half_open(port, 1)
    async with asyncio.timeout(3):
        assert await reader.read() == b""
    writer.close()


async def test_at_the_limit_the_longest_waiting_connection_makes_way(guarded) -> None:
    port = guarded[0].port
    held = await half_open(port, 20)
    assert await healthz_status(port) == 200
    closed = [asyncio.create_task(reader.read()) for reader, _ in held]
    # The 15 oldest made way for the newer ones, and one more for the health check ...
    async with asyncio.timeout(1):
        assert await asyncio.gather(*closed[:16]) == [b""] * 16
    # ... while the newest still wait for their heads (until header_timeout).
    assert not any(task.done() for task in closed[16:])
    for task in closed[16:]:
        task.cancel()
    for _, writer in held:
        writer.close()


async def test_when_every_connection_is_serving_a_request_a_newcomer_gets_503(guarded) -> None:
    web_server, updates = guarded
    port = web_server.port
    body = runflow_body("known")
    busy = []
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post_head("/callbacks/runflow", len(body), signed(body)) + body)
        busy.append((reader, writer))
    async with asyncio.timeout(3):
        await updates.all_arrived.wait()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        assert response.status == 503
        assert "busy" in (await response.json())["error"]
    updates.release.set()
    for reader, writer in busy:
        async with asyncio.timeout(3):
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        writer.close()
    assert await healthz_status(port) == 200
