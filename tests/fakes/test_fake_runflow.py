"""Tests of the Runflow fake itself: it must behave like the documented API."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image, ImageChops

from .runflow import KNOWN_MODEL, FakeRunflow, expected_output_image

SECRET = "whsec_test_secret"
CREATE_PATH = f"/v1/models/{KNOWN_MODEL}/runs"
FAST_RETRIES = (0.01, 0.01, 0.01)


def _source_image() -> Image.Image:
    image = Image.new("RGB", (12, 8))
    image.putdata([(x * 20, y * 30, (x + y) * 10) for y in range(8) for x in range(12)])
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Site:
    base_url: str
    runner: web.AppRunner


async def _serve(app: web.Application) -> Site:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return Site(f"http://{host}:{port}", runner)


@pytest.fixture
async def image_site() -> AsyncIterator[Site]:
    png = _png(_source_image())

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    async def not_image(_: web.Request) -> web.Response:
        return web.Response(body=b"definitely not an image", content_type="image/png")

    app = web.Application()
    app.router.add_get("/img.png", image)
    app.router.add_get("/text.png", not_image)
    site = await _serve(app)
    yield site
    await site.runner.cleanup()


@dataclass
class Receiver:
    site: Site
    statuses: list[int] = field(default_factory=list)  # answers to give, in order; then 200
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"{self.site.base_url}/callback"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    holder: list[Receiver] = []

    async def callback(request: web.Request) -> web.Response:
        rec = holder[0]
        rec.received.append((await request.read(), dict(request.headers)))
        rec.event.set()
        status = rec.statuses.pop(0) if rec.statuses else 200
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_post("/callback", callback)
    rec = Receiver(await _serve(app))
    holder.append(rec)
    yield rec
    await rec.site.runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunflow]:
    runflow = FakeRunflow(callback_secret=SECRET)
    runflow.callback_retry_delays = FAST_RETRIES
    await runflow.start()
    yield runflow
    await runflow.close()


@pytest.fixture
async def http(fake: FakeRunflow) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        base_url=fake.base_url, headers={"Authorization": f"Bearer {fake.api_key}"}
    ) as session:
        yield session


def _body(image_site: Site, **extra_input: Any) -> dict[str, Any]:
    return {
        "input": {"prompt": "make it pop", "image_urls": [f"{image_site.base_url}/img.png"], **extra_input},
        "metadata": {"job": 7},
        "client_ref": "job-7",
    }


async def _create(http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(CREATE_PATH, json=body) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.content_type == "application/json"
        result: dict[str, Any] = await resp.json()
        return result


async def _get_run(http: aiohttp.ClientSession, run_id: str) -> dict[str, Any]:
    async with http.get(f"/v1/runs/{run_id}") as resp:
        assert resp.status == 200
        result: dict[str, Any] = await resp.json()
        return result


def _verify(raw: bytes, headers: dict[str, str], secret: str) -> bool:
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("Runflow-Signature", ""))


async def test_binds_loopback_only(fake: FakeRunflow) -> None:
    assert fake.base_url.startswith("http://127.0.0.1:")


async def test_run_succeeds_by_polling(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site
) -> None:
    fake.hold = True
    created = await _create(http, _body(image_site, num_images=2))
    assert created["status_code"] == "queued"
    assert created["model_id"] == KNOWN_MODEL
    assert created["output"] is None
    assert created["completed_at"] is None
    assert created["metadata"] == {"job": 7}
    assert created["client_ref"] == "job-7"
    assert created["created_at"].endswith("+00:00")
    run_id = created["id"]
    assert fake.runs[run_id] is await fake.wait_for_run()

    await fake.wait_status(run_id, "running")
    running = await _get_run(http, run_id)
    assert running["status_code"] == "running"
    assert running["started_at"].endswith("+00:00")

    fake.release(run_id)
    await fake.wait_finished(run_id)
    done = await _get_run(http, run_id)
    assert fake.runs[run_id].polls == 2
    assert done["status_code"] == "succeeded"
    assert done["completed_at"].endswith("+00:00")
    assert isinstance(done["duration_ms"], int)
    assert done["cost"] == "0.266"  # a string, as the run schema documents it
    output = done["output"]
    assert isinstance(output["seed"], int)
    assert isinstance(output["timing"]["inference"], float)
    assert output["nsfw_detected"] is False
    assert len(output["outputs"]) == 2
    assert output["image_urls"] == [o["url"] for o in output["outputs"]]

    decoded: list[Image.Image] = []
    async with aiohttp.ClientSession() as plain:  # presigned: no Authorization header
        for entry in output["outputs"]:
            assert entry["type"] == "image"
            assert entry["content_type"] == "image/png"
            assert (entry["width"], entry["height"]) == (12, 8)
            async with plain.get(entry["url"]) as resp:
                assert resp.status == 200
                assert resp.content_type == "image/png"
                decoded.append(Image.open(io.BytesIO(await resp.read())).convert("RGB"))
    source = _source_image()
    assert ImageChops.difference(decoded[0], expected_output_image(source, 0)).getbbox() is None
    assert ImageChops.difference(decoded[1], expected_output_image(source, 1)).getbbox() is None
    assert ImageChops.difference(decoded[0], source).getbbox() is not None
    assert ImageChops.difference(decoded[0], decoded[1]).getbbox() is not None


async def test_output_format_and_bad_file_signature(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site
) -> None:
    created = await _create(http, _body(image_site, output_format="webp", quality="low"))
    run = await fake.wait_finished(created["id"])
    assert run.status_code == "succeeded"
    assert run.cost == "0.009"
    assert run.output is not None
    entry = run.output["outputs"][0]
    assert entry["content_type"] == "image/webp"
    async with aiohttp.ClientSession() as plain:
        async with plain.get(entry["url"]) as resp:
            assert Image.open(io.BytesIO(await resp.read())).format == "WEBP"
        async with plain.get(entry["url"].split("?")[0] + "?sig=0000") as resp:
            assert resp.status == 403
        fake.expire_files()
        async with plain.get(entry["url"]) as resp:
            assert resp.status == 404


async def test_unauthorized(fake: FakeRunflow, image_site: Site) -> None:
    async with aiohttp.ClientSession(base_url=fake.base_url) as session:
        async with session.post(CREATE_PATH, json=_body(image_site)) as resp:
            assert resp.status == 401
            assert resp.content_type == "application/json"
            assert (await resp.json())["code"] == "UNAUTHORIZED"
        async with session.get("/v1/runs/x", headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
    assert fake.runs == {}
    assert [r.status for r in fake.requests] == [401, 401]


@pytest.mark.parametrize(
    ("input_", "field_"),
    [
        ({"image_urls": ["http://127.0.0.1/a.png"]}, "input.prompt"),
        ({"prompt": "  ", "image_urls": ["http://127.0.0.1/a.png"]}, "input.prompt"),
        ({"prompt": "x" * 20_001, "image_urls": ["http://127.0.0.1/a.png"]}, "input.prompt"),
        ({"prompt": "p", "image_urls": []}, "input.image_urls"),
        ({"prompt": "p", "image_urls": ["http://127.0.0.1/a.png"] * 17}, "input.image_urls"),
        ({"prompt": "p", "image_urls": ["ftp://127.0.0.1/a.png"]}, "input.image_urls.0"),
        ({"prompt": "p", "image_urls": ["http://127.0.0.1/a.png"], "num_images": 5}, "input.num_images"),
        ({"prompt": "p", "image_urls": ["http://127.0.0.1/a.png"], "quality": "ultra"}, "input.quality"),
        ({"prompt": "p", "image_urls": ["http://127.0.0.1/a.png"], "image_size": "4k"}, "input.image_size"),
        (
            {"prompt": "p", "image_urls": ["http://127.0.0.1/a.png"], "output_format": "gif"},
            "input.output_format",
        ),
        ({"prompt": "p", "image_urls": ["http://127.0.0.1/a.png"], "mask_url": 3}, "input.mask_url"),
    ],
)
async def test_validation_error(http: aiohttp.ClientSession, input_: dict[str, Any], field_: str) -> None:
    async with http.post(CREATE_PATH, json={"input": input_}) as resp:
        assert resp.status == 422
        body = await resp.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["message"]
    assert field_ in [e["field"] for e in body["errors"]]


async def test_unknown_model_route_and_run(http: aiohttp.ClientSession, image_site: Site) -> None:
    async with http.post("/v1/models/openai/gpt-image-1/runs", json=_body(image_site)) as resp:
        assert resp.status == 404
        assert (await resp.json())["code"] == "MODEL_NOT_FOUND"
    async with http.get("/v1/runs/00000000-0000-4000-8000-000000000000") as resp:
        assert resp.status == 404
        assert (await resp.json())["code"] == "RUN_NOT_FOUND"
    async with http.post("/v1/runs/00000000-0000-4000-8000-000000000000/cancel") as resp:
        assert resp.status == 404
        assert (await resp.json())["code"] == "NOT_FOUND"


async def test_malformed_json_request_is_400(fake: FakeRunflow, http: aiohttp.ClientSession) -> None:
    async with http.post(
        CREATE_PATH, data=b"{not json", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == "BAD_REQUEST"
    assert fake.requests[-1].json is None
    assert fake.requests[-1].body == b"{not json"


async def test_fail_next_raw_bytes_gives_malformed_json(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site
) -> None:
    fake.fail_next("POST", r"/runs$", 200, b'{"id": "trunc', headers={"X-Test": "1"})
    async with http.post(CREATE_PATH, json=_body(image_site)) as resp:
        assert resp.status == 200
        assert resp.headers["X-Test"] == "1"
        with pytest.raises(json.JSONDecodeError):
            json.loads(await resp.read())
    assert fake.runs == {}
    fake.fail_next("GET", r"^/v1/runs/", 503, times=2)
    for _ in range(2):
        async with http.get("/v1/runs/nope") as resp:
            assert resp.status == 503
            assert (await resp.json())["code"] == "MODEL_UNAVAILABLE"
    async with http.get("/v1/runs/nope") as resp:  # faults consumed
        assert resp.status == 404
    await _create(http, _body(image_site))


async def test_rate_limit_next(fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site) -> None:
    fake.rate_limit_next("POST", r"/v1/models/.+/runs", retry_after=2, times=2)
    fake.rate_limit_next("POST", r"/v1/models/.+/runs", retry_after=None)
    for expected in ("2", "2", None):
        async with http.post(CREATE_PATH, json=_body(image_site)) as resp:
            assert resp.status == 429
            assert resp.headers.get("Retry-After") == expected
            body = await resp.json()
            assert body["code"] == "RATE_LIMITED"
            assert body["message"].startswith("Rate limit exceeded: ")
    await _create(http, _body(image_site))
    assert [r.status for r in fake.requests] == [429, 429, 429, 201]


async def test_callback_signed_and_retried_after_500(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    created = await _create(http, {**_body(image_site), "callback_url": receiver.url})
    sent = await fake.wait_callbacks(2)
    assert [c["status"] for c in sent] == [500, 200]
    assert len(receiver.received) == 2
    (raw1, headers1), (raw2, headers2) = receiver.received
    assert raw1 == raw2
    assert headers1["Runflow-Request-Id"] == headers2["Runflow-Request-Id"]
    assert headers1["Content-Type"] == "application/json"
    assert _verify(raw2, headers2, SECRET)
    assert fake.sign(raw2) == headers2["Runflow-Signature"]
    payload = json.loads(raw2)
    run = fake.runs[created["id"]]
    assert payload == {
        "event": "run.completed",
        "run_id": run.id,
        "status": "succeeded",
        "output": run.output,
        "duration_ms": run.duration_ms,
        "created_at": run.created_at,
        "completed_at": run.completed_at,
        "metadata": {"job": 7},
    }


async def test_callback_gives_up_after_four_attempts(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site, receiver: Receiver
) -> None:
    receiver.statuses = [502, 503, 500, 500, 500]
    await _create(http, {**_body(image_site), "callback_url": receiver.url})
    await fake.wait_callbacks(4)
    await fake.wait_idle()  # delivery finished: no fifth attempt
    assert [c["status"] for c in fake.callbacks_sent] == [502, 503, 500, 500]


async def test_callback_not_retried_on_4xx(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site, receiver: Receiver
) -> None:
    receiver.statuses = [400]
    await _create(http, {**_body(image_site), "callback_url": receiver.url})
    await fake.wait_callbacks(1)
    await fake.wait_idle()
    assert [c["status"] for c in fake.callbacks_sent] == [400]


async def test_callback_retried_on_network_error(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site, receiver: Receiver
) -> None:
    dead = await _serve(web.Application())
    dead_url = f"{dead.base_url}/callback"
    await dead.runner.cleanup()  # nothing listens there any more
    await _create(http, {**_body(image_site), "callback_url": dead_url})
    await fake.wait_callbacks(4)
    assert [c["status"] for c in fake.callbacks_sent] == [None] * 4
    assert all("error" in c for c in fake.callbacks_sent)


@pytest.mark.parametrize("mode", ["never", "twice", "forged"])
async def test_callback_modes(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site, receiver: Receiver, mode: str
) -> None:
    fake.callback_mode = mode  # type: ignore[assignment]
    created = await _create(http, {**_body(image_site), "callback_url": receiver.url})
    await fake.wait_finished(created["id"])
    await fake.wait_idle()
    if mode == "never":
        assert fake.callbacks_sent == []
        assert receiver.received == []
    elif mode == "twice":
        assert len(receiver.received) == 2
        assert receiver.received[0][0] == receiver.received[1][0]
        assert all(_verify(raw, headers, SECRET) for raw, headers in receiver.received)
    else:
        [(raw, headers)] = receiver.received
        assert len(headers["Runflow-Signature"]) == 64
        assert not _verify(raw, headers, SECRET)


async def test_no_signature_without_secret(image_site: Site, receiver: Receiver) -> None:
    async with (
        FakeRunflow() as fake,
        aiohttp.ClientSession(headers={"Authorization": "Bearer rf-test-key"}) as http,
    ):
        body = {**_body(image_site), "callback_url": receiver.url}
        async with http.post(fake.base_url + CREATE_PATH, json=body) as resp:
            assert resp.status == 201
        await fake.wait_callbacks(1)
    [(_, headers)] = receiver.received
    assert "Runflow-Signature" not in headers
    assert "Runflow-Request-Id" in headers


async def test_non_loopback_callback_refused(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site
) -> None:
    await _create(http, {**_body(image_site), "callback_url": "https://example.com/hook"})
    [entry] = await fake.wait_callbacks(1)
    assert entry["status"] is None
    assert "non-loopback" in entry["error"]


async def test_fail_runs(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site, receiver: Receiver
) -> None:
    fake.fail_runs = {
        "failure_code": "PROVIDER_ERROR",
        "failure_message": "upstream exploded",
        "failure_stage_code": "inference",
    }
    created = await _create(http, {**_body(image_site), "callback_url": receiver.url})
    await fake.wait_finished(created["id"])
    run = await _get_run(http, created["id"])
    assert run["status_code"] == "failed"
    assert run["failure_code"] == "PROVIDER_ERROR"
    assert run["failure_message"] == "upstream exploded"
    assert run["failure_stage_code"] == "inference"
    assert run["output"] is None
    [entry] = await fake.wait_callbacks(1)
    payload = json.loads(entry["body"])
    assert payload["event"] == "run.failed"
    assert payload["status"] == "failed"
    assert payload["output"] == {"code": "PROVIDER_ERROR", "message": "upstream exploded", "errors": []}


async def test_partial_runs(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site, receiver: Receiver
) -> None:
    fake.partial_images = 1
    body = _body(image_site, num_images=3, quality="low")
    created = await _create(http, {**body, "callback_url": receiver.url})
    await fake.wait_finished(created["id"])
    run = await _get_run(http, created["id"])
    assert run["status_code"] == "partial_succeeded" and run["cost"] == "0.009"
    assert len(run["output"]["outputs"]) == 1 == len(run["output"]["image_urls"])
    [entry] = await fake.wait_callbacks(1)
    payload = json.loads(entry["body"])
    assert (payload["event"], payload["status"]) == ("run.partial_succeeded", "partial_succeeded")
    assert payload["output"] == run["output"]


@pytest.mark.parametrize(
    ("url_path", "code"),
    [
        ("https://example.com/img.png", "INPUT_FETCH_FAILED"),
        ("/text.png", "INPUT_VALIDATION_FAILED"),
        ("/missing.png", "INPUT_VALIDATION_FAILED"),
    ],
)
async def test_input_fetch_failures(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site, url_path: str, code: str
) -> None:
    url = url_path if url_path.startswith("https:") else image_site.base_url + url_path
    created = await _create(http, {"input": {"prompt": "p", "image_urls": [url]}})
    run = await fake.wait_finished(created["id"])
    assert run.status_code == "failed"
    assert run.failure_code == code
    assert run.failure_stage_code == "preprocess"


async def test_nsfw_and_empty_output(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site
) -> None:
    fake.nsfw = True
    first = await _create(http, _body(image_site))
    fake.nsfw = False
    fake.empty_output = True
    second = await _create(http, _body(image_site))
    run1 = await fake.wait_finished(first["id"])
    run2 = await fake.wait_finished(second["id"])
    assert run1.output is not None and run1.output["nsfw_detected"] is True
    assert len(run1.output["outputs"]) == 1
    assert run2.status_code == "succeeded"
    assert run2.output is not None and run2.output["outputs"] == []
    assert run2.output["image_urls"] == []


async def test_hold_and_release(fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site) -> None:
    fake.hold = True
    a = await _create(http, _body(image_site))
    b = await _create(http, _body(image_site))
    assert (await fake.wait_for_run(count=2)).id == b["id"]
    await fake.wait_status(a["id"], "running")
    await fake.wait_status(b["id"], "running")
    fake.release(a["id"])
    await fake.wait_finished(a["id"])
    assert fake.runs[b["id"]].status_code == "running"
    assert (await _get_run(http, b["id"]))["status_code"] == "running"
    fake.release()
    assert (await fake.wait_finished(b["id"])).status_code == "succeeded"


async def test_delay_and_cancel_run(
    fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site, receiver: Receiver
) -> None:
    fake.delay = 30
    created = await _create(http, {**_body(image_site), "callback_url": receiver.url})
    await fake.wait_status(created["id"], "running")
    with pytest.raises(TimeoutError):
        await fake.wait_finished(created["id"], timeout=0.05)
    fake.cancel_run(created["id"])
    assert (await _get_run(http, created["id"]))["status_code"] == "canceled"
    [entry] = await fake.wait_callbacks(1)
    payload = json.loads(entry["body"])
    assert (payload["event"], payload["status"], payload["output"]) == ("run.cancelled", "canceled", None)


async def test_hang_and_reset(fake: FakeRunflow, http: aiohttp.ClientSession, image_site: Site) -> None:
    fake.hang_next("POST", r"/runs$", seconds=30)
    with pytest.raises(TimeoutError):
        await http.post(CREATE_PATH, json=_body(image_site), timeout=aiohttp.ClientTimeout(sock_read=0.2))
    run = await fake.wait_for_run()  # the server handled it; only the answer was late
    fake.reset_next("POST", r"/runs$")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.post(CREATE_PATH, json=_body(image_site))
    assert fake.requests[-1].status is None
    fake.reset_next("GET", r"/v1/runs/", times=2)  # aiohttp retries an idempotent GET once
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.get(f"/v1/runs/{run.id}")
    assert (await _get_run(http, run.id))["id"] == run.id
