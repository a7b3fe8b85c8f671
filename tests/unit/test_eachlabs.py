"""The each::labs client against the loopback fake that follows each::labs' documented API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.providers.base import (
    AuthFailed,
    ContentRejected,
    EditRequest,
    ImageRef,
    InvalidRequest,
    RateLimited,
    Run,
    RunFailed,
    RunStatus,
    Unavailable,
)
from bot.providers.eachlabs import EachlabsProvider
from bot.providers.eachlabs import parse_callback as parse_eachlabs_webhook
from bot.providers.eachlabs import verify_callback as verify_eachlabs
from bot.providers.settings import EachlabsSettings
from tests.fakes.eachlabs import COST_PER_IMAGE, KNOWN_MODEL, FakeEachlabs
from tests.fakes.fal import WebhookSink


@pytest.fixture
async def each() -> AsyncIterator[FakeEachlabs]:
    async with FakeEachlabs() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def settings(fake: FakeEachlabs, **overrides: object) -> EachlabsSettings:
    fields: dict[str, object] = {
        "api_key": SecretStr(fake.api_key),
        "base_url": fake.base_url,
        "model": KNOWN_MODEL,
        "request_timeout": 1.0,
    }
    fields.update(overrides)
    return EachlabsSettings(**fields)


@pytest.fixture
def provider(each: FakeEachlabs, session: aiohttp.ClientSession) -> EachlabsProvider:
    return EachlabsProvider(settings(each, callback_secret=SecretStr("whsec")), session)


def request(*urls: str, **overrides: object) -> EditRequest:
    fields: dict[str, object] = {
        "job_id": 9,
        "prompt": "make it blue",
        "images": [
            ImageRef(f"{i}.png", url=url) for i, url in enumerate(urls or ["http://127.0.0.1:9/a.png"])
        ],
    }
    fields.update(overrides)
    return EditRequest(**fields)  # type: ignore[arg-type]


async def test_create_then_poll_to_success(provider: EachlabsProvider, each: FakeEachlabs) -> None:
    run = await provider.submit(request(count=2, quality="low"), callback_url="http://127.0.0.1:9/hook")
    sent = each.requests[0]
    assert (sent.method, sent.path) == ("POST", "/v1/prediction")
    assert sent.headers["Authorization"] == f"Bearer {each.api_key}"
    assert sent.json == {
        "model": KNOWN_MODEL,
        "version": "0.0.1",
        "input": {
            "prompt": "make it blue",
            "image_url": "http://127.0.0.1:9/a.png",
            "num_images": 2,
            "quality": "low",
            "image_size": "auto",
            "output_format": "png",
        },
        "webhook_url": "http://127.0.0.1:9/hook",
        "webhook_secret": "whsec",
    }
    await each.wait_status(run.run_id, "success")
    state = await provider.status(run)
    assert state.status is RunStatus.SUCCEEDED and state.result is not None
    assert len(state.result.images) == 2 and all(image.url for image in state.result.images)
    assert state.result.usd_micros == round(COST_PER_IMAGE * 2 * 1_000_000)
    assert state.result.duration_ms is not None
    assert (await provider.result(run)).images == state.result.images


async def test_extra_references_and_mask(provider: EachlabsProvider, each: FakeEachlabs) -> None:
    await provider.submit(
        request(
            "http://127.0.0.1:9/a.png",
            "http://127.0.0.1:9/b.png",
            mask=ImageRef("m", url="http://127.0.0.1:9/m"),
        )
    )
    sent = each.order[0].input
    assert sent["image_url"] == "http://127.0.0.1:9/a.png"
    assert sent["image_urls"] == ["http://127.0.0.1:9/a.png", "http://127.0.0.1:9/b.png"]
    assert sent["mask_url"] == "http://127.0.0.1:9/m"


async def test_bytes_are_refused_before_any_request(provider: EachlabsProvider, each: FakeEachlabs) -> None:
    with pytest.raises(InvalidRequest, match="URL"):
        await provider.submit(request(images=[ImageRef("a.png", data=b"png")]))
    assert each.requests == []


@pytest.mark.parametrize("dimensions", [(3840, 2160), None])
async def test_sizes_above_1k_are_refused_before_any_request(
    dimensions: tuple[int, int] | None, provider: EachlabsProvider, each: FakeEachlabs
) -> None:
    assert provider.resolutions == frozenset({"1K"})
    with pytest.raises(InvalidRequest, match="only its preset sizes"):
        await provider.submit(request(resolution="4K", dimensions=dimensions))
    assert each.requests == []


async def test_slow_prediction_is_queued_then_running(provider: EachlabsProvider, each: FakeEachlabs) -> None:
    each.hold = True
    each.queued_polls = 2
    run = await provider.submit(request())
    assert (await provider.status(run)).status is RunStatus.QUEUED
    assert (await provider.status(run)).status is RunStatus.QUEUED
    await each.wait_status(run.run_id, "processing")
    assert (await provider.status(run)).status is RunStatus.RUNNING
    each.release()
    await each.wait_status(run.run_id, "success")
    assert (await provider.status(run)).status is RunStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("envelope", "kind"),
    [
        (
            {"classification": {"category": "content_moderation"}, "error_message": "flagged by safety"},
            ContentRejected,
        ),
        ({"error_code": "INPUT_VALIDATION_ERROR", "error_message": "image too small"}, InvalidRequest),
        ({"error_message": "Model timeout after 30s"}, RunFailed),
    ],
)
async def test_failed_predictions_are_typed(
    envelope: dict[str, Any], kind: type[Exception], provider: EachlabsProvider, each: FakeEachlabs
) -> None:
    each.fail_runs = envelope
    run = await provider.submit(request())
    await each.wait_status(run.run_id, "error")
    state = await provider.status(run)
    assert state.status is RunStatus.FAILED and type(state.error) is kind
    assert state.error.message == envelope["error_message"]
    with pytest.raises(kind):
        await provider.result(run)


async def test_a_failure_without_envelope_falls_back_to_the_logs(
    provider: EachlabsProvider, each: FakeEachlabs
) -> None:
    run = await provider.submit(request())
    failed = {"id": run.run_id, "status": "error", "output": None, "logs": "Error: out of memory"}
    each.fail_next("GET", "/v1/prediction/", 200, failed)
    state = await provider.status(run)
    assert isinstance(state.error, RunFailed) and state.error.message == "Error: out of memory"


async def test_nsfw_flag_in_fal_shaped_output(provider: EachlabsProvider, each: FakeEachlabs) -> None:
    each.output_shape = "fal"
    each.nsfw = True
    run = await provider.submit(request())
    await each.wait_status(run.run_id, "success")
    state = await provider.status(run)
    assert state.result is not None and state.result.nsfw and state.result.seed == 7
    assert state.result.images[0].width == 32


async def test_success_without_output_is_a_failure(provider: EachlabsProvider, each: FakeEachlabs) -> None:
    each.empty_output = True
    run = await provider.submit(request())
    await each.wait_status(run.run_id, "success")
    state = await provider.status(run)
    assert state.status is RunStatus.FAILED and isinstance(state.error, RunFailed)


async def test_invalid_input_is_invalid_request(provider: EachlabsProvider) -> None:
    with pytest.raises(InvalidRequest, match="prompt"):
        await provider.submit(request(prompt=" "))


async def test_unknown_model_is_invalid_request(each: FakeEachlabs, session: aiohttp.ClientSession) -> None:
    with pytest.raises(InvalidRequest, match="model not found"):
        await EachlabsProvider(settings(each, model="no-such-model"), session).submit(request())


async def test_unknown_prediction_is_invalid_request(provider: EachlabsProvider) -> None:
    with pytest.raises(InvalidRequest, match="Prediction not found"):
        await provider.status(Run("eachlabs", "nope"))


async def test_wrong_key_is_auth_failed(each: FakeEachlabs, session: aiohttp.ClientSession) -> None:
    with pytest.raises(AuthFailed, match="API key"):
        await EachlabsProvider(settings(each, api_key=SecretStr("wrong")), session).submit(request())


async def test_rate_limit_carries_retry_after(provider: EachlabsProvider, each: FakeEachlabs) -> None:
    each.rate_limit_next("POST", "/v1/prediction$", retry_after=60)
    with pytest.raises(RateLimited) as caught:
        await provider.submit(request())
    assert caught.value.retry_after == 60


@pytest.mark.parametrize("fault", ["500", "malformed", "reset", "no-id"])
async def test_create_outages_are_unavailable(
    fault: str, provider: EachlabsProvider, each: FakeEachlabs
) -> None:
    if fault == "500":
        each.fail_next("POST", "/v1/prediction$", 500, {"error": "Failed to create prediction"})
    elif fault == "malformed":
        each.fail_next("POST", "/v1/prediction$", 200, b"<html>")
    elif fault == "reset":
        each.reset_next("POST", "/v1/prediction$")
    else:
        each.fail_next("POST", "/v1/prediction$", 200, {"status": "success"})
    with pytest.raises(Unavailable):
        await provider.submit(request())


@pytest.mark.parametrize("fault", ["timeout", "unknown-status"])
async def test_poll_outages_are_unavailable(
    fault: str, provider: EachlabsProvider, each: FakeEachlabs
) -> None:
    run = await provider.submit(request())
    if fault == "timeout":
        each.hang_next("GET", "/v1/prediction/", 5.0)
    else:
        each.fail_next("GET", "/v1/prediction/", 200, {"status": "thinking"})
    with pytest.raises(Unavailable):
        await provider.status(run)


async def test_cancel(provider: EachlabsProvider, each: FakeEachlabs) -> None:
    each.hold = True
    run = await provider.submit(request())
    await each.wait_status(run.run_id, "processing")
    assert await provider.cancel(run) is True
    assert (await provider.status(run)).status is RunStatus.CANCELLED
    assert each.predictions[run.run_id].cost == 0
    assert await provider.cancel(run) is False
    each.fail_next("POST", "/cancel$", 500)
    assert await provider.cancel(run) is False


@pytest.mark.parametrize("fails", [False, True])
async def test_the_fakes_webhook_is_the_documented_one_with_the_secret(
    fails: bool, each: FakeEachlabs, session: aiohttp.ClientSession
) -> None:
    each.webhook_retry_delays = ()
    if fails:
        each.fail_runs = {"error_message": "Model timeout after 30s"}
    async with WebhookSink() as sink:
        provider = EachlabsProvider(settings(each, callback_secret=SecretStr("whsec")), session)
        run = await provider.submit(request(), callback_url=sink.url)
        [(body, headers)] = await sink.wait()
    assert verify_eachlabs(body, headers, "whsec")
    payload = json.loads(body)
    assert set(payload) == {"exec_id", "flow_id", "status", "output", "error"} and payload["error"] == ""
    prediction_id, state = parse_eachlabs_webhook(body)
    assert prediction_id == run.run_id
    if fails:
        assert isinstance(state.error, RunFailed) and "Model timeout after 30s" in state.error.message
    else:
        assert state.status is RunStatus.SUCCEEDED
