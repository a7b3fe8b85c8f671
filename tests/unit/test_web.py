"""The bot's HTTP server on a real loopback socket: callbacks are verified, idempotent and
never trusted for the outcome; signed file links cannot be forged."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from bot.config import ProvidersSettings, RunflowSettings
from bot.files import FileStore
from bot.links import FileLinks
from bot.web import Callbacks, Health, Served, build_app, callback_hosts
from storage.db import open_db

SECRET = "whsec_test"


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
        order=["runflow", "fal"],
        runflow=RunflowSettings(api_key=SecretStr("k"), callback_secret=SecretStr(SECRET)),
    )
    updates = Updates()
    links = FileLinks("http://127.0.0.1")
    files = FileStore(tmp_path / "files")
    app = build_app(
        Health(db.conn, gateway_ready=lambda: True, accepting=lambda: True),
        Callbacks(callback_hosts(settings), updates),
        served=Served(links, files),
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


async def test_health_answers_json(server) -> None:
    test_server, _, _, _ = server
    async with aiohttp.ClientSession() as session, session.get(test_server.make_url("/healthz")) as response:
        assert response.status == 200
        assert (await response.json())["database"] == "ok"
