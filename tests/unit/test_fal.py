"""The fal queue client against the loopback fake that follows fal's documented queue API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr

from bot.pictures.sizes import RESOLUTIONS
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
from bot.providers.fal import FalProvider, parse_error
from bot.providers.fal import parse_callback as parse_fal_webhook
from bot.providers.payloads import MASK_FIELD
from bot.providers.settings import FalSettings
from tests.fakes.fal import FakeFal, WebhookSink
from tests.images import decode

CONTENT = [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]


@pytest.fixture
async def fal() -> AsyncIterator[FakeFal]:
    async with FakeFal() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def provider(fal: FakeFal, session: aiohttp.ClientSession) -> FalProvider:
    return FalProvider(
        FalSettings(api_key=SecretStr(fal.api_key), base_url=fal.base_url, request_timeout=1.0), session
    )


def request(**overrides: object) -> EditRequest:
    fields: dict[str, object] = {
        "job_id": 5,
        "prompt": "make it blue",
        "images": [ImageRef("a.png", url="http://127.0.0.1:9/a.png")],
    }
    fields.update(overrides)
    return EditRequest(**fields)  # type: ignore[arg-type]


async def finished(fal: FakeFal, run: Run) -> None:
    await fal.wait_status(run.run_id, "COMPLETED")


async def test_submit_sends_top_level_input_and_keeps_the_queue_urls(
    provider: FalProvider, fal: FakeFal
) -> None:
    run = await provider.submit(request(count=2, quality="medium", image_size="portrait_4_3"))
    sent = fal.requests[0]
    assert sent.path == "/openai/gpt-image-2/edit"
    assert sent.headers["Authorization"] == f"Key {fal.api_key}"
    assert sent.json == {
        "prompt": "make it blue",
        "image_urls": ["http://127.0.0.1:9/a.png"],
        "num_images": 2,
        "quality": "medium",
        "image_size": {"width": 768, "height": 1024},
        "output_format": "png",
    }
    base = f"{fal.base_url}/openai/gpt-image-2/requests/{run.run_id}"
    assert dict(run.data) == {
        "status_url": f"{base}/status",
        "response_url": base,
        "cancel_url": f"{base}/cancel",
    }

    await finished(fal, run)
    state = await provider.status(run)
    assert state.status is RunStatus.SUCCEEDED and state.result is not None
    result = state.result
    assert len(result.images) == 2 and result.images[0].url is not None
    assert (result.images[0].width, result.images[0].height, result.images[0].content_type) == (
        768,
        1024,
        "image/png",
    )
    assert result.duration_ms is not None
    # fal documents no seed, NSFW flag or token usage in this model's output.
    assert result.seed is None and not result.nsfw and result.usd_micros is None
    assert (await provider.result(run)).images == result.images


async def test_mask_and_inline_bytes(provider: FalProvider, fal: FakeFal) -> None:
    await provider.submit(
        request(
            images=[ImageRef("a.png", data=b"\x89PNG")],
            mask=ImageRef("m.png", url="http://127.0.0.1:9/m.png"),
        )
    )
    sent = fal.order[0].input
    assert sent["image_urls"] == ["data:image/png;base64,iVBORw=="]
    assert sent[MASK_FIELD] == "http://127.0.0.1:9/m.png"


async def test_a_size_above_1k_is_sent_in_the_custom_form_and_made_at_that_size(
    provider: FalProvider, fal: FakeFal, session: aiohttp.ClientSession
) -> None:
    assert provider.resolutions == frozenset(RESOLUTIONS)
    run = await provider.submit(
        request(image_size="landscape_16_9", resolution="2K", dimensions=(2048, 1152))
    )
    assert fal.order[0].input["image_size"] == {"width": 2048, "height": 1152}
    await finished(fal, run)
    [image] = (await provider.result(run)).images
    assert (image.width, image.height) == (2048, 1152)
    assert image.url is not None
    async with session.get(image.url) as reply:
        assert decode(await reply.read()).size == (2048, 1152)


async def test_a_size_the_model_cannot_make_is_invalid(provider: FalProvider) -> None:
    with pytest.raises(InvalidRequest, match="multiples of 16"):
        await provider.submit(request(resolution="2K", dimensions=(2000, 1000)))


async def test_queue_position_then_running(provider: FalProvider, fal: FakeFal) -> None:
    fal.queue_paused = True
    await provider.submit(request())
    second = await provider.submit(request())
    state = await provider.status(second)
    assert state.status is RunStatus.QUEUED and state.queue_position == 1
    fal.hold = True
    fal.queue_paused = False
    await fal.wait_status(second.run_id, "IN_PROGRESS")
    assert (await provider.status(second)).status is RunStatus.RUNNING
    fal.release()
    await finished(fal, second)
    assert (await provider.status(second)).status is RunStatus.SUCCEEDED


async def test_a_run_without_its_urls_is_not_rebuilt(provider: FalProvider, fal: FakeFal) -> None:
    run = await provider.submit(request())
    with pytest.raises(InvalidRequest, match="status_url"):
        await provider.status(Run("fal", run.run_id))
    assert len(fal.requests) == 1


async def test_webhook_is_requested_retried_and_parsed(provider: FalProvider, fal: FakeFal) -> None:
    async with WebhookSink(statuses=(500,)) as sink:
        run = await provider.submit(request(), callback_url=sink.url)
        assert fal.requests[0].query == {"fal_webhook": sink.url}
        received = await sink.wait(2)
    body, headers = received[1]
    assert headers["X-Fal-Webhook-Request-Id"] == run.run_id
    request_id, state = parse_fal_webhook(body)
    assert request_id == run.run_id
    assert state.status is RunStatus.SUCCEEDED and state.result is not None and len(state.result.images) == 1


async def test_failed_run_webhook_carries_the_typed_error(provider: FalProvider, fal: FakeFal) -> None:
    fal.fail_runs = {"status": 422, "detail": CONTENT}
    async with WebhookSink() as sink:
        await provider.submit(request(), callback_url=sink.url)
        [(body, _)] = await sink.wait()
    _, state = parse_fal_webhook(body)
    assert state.status is RunStatus.FAILED and isinstance(state.error, ContentRejected)


async def test_webhook_to_a_public_address_is_never_sent(provider: FalProvider, fal: FakeFal) -> None:
    await provider.submit(request(), callback_url="https://example.com/hook")
    [attempt] = await fal.wait_callbacks()
    assert attempt["error"].startswith("refused")


@pytest.mark.parametrize(
    ("fail_runs", "kind"),
    [
        ({"status": 422, "detail": CONTENT}, ContentRejected),
        ({"status": 422, "detail": CONTENT, "error_type": "content_policy_violation"}, ContentRejected),
        (
            {
                "status": 422,
                "detail": [{"loc": ["body", "image_urls", 0], "msg": "too big", "type": "image_too_large"}],
            },
            InvalidRequest,
        ),
        ({"status": 503, "detail": "Runner disconnected", "error_type": "runner_disconnected"}, RunFailed),
    ],
)
async def test_failed_runs_are_typed(
    fail_runs: dict[str, object], kind: type[Exception], provider: FalProvider, fal: FakeFal
) -> None:
    fal.fail_runs = fail_runs
    run = await provider.submit(request())
    await finished(fal, run)
    state = await provider.status(run)
    assert state.status is RunStatus.FAILED and isinstance(state.error, kind)
    with pytest.raises(kind):
        await provider.result(run)


async def test_failure_reason_fetch_that_breaks_still_ends_the_run(
    provider: FalProvider, fal: FakeFal
) -> None:
    fal.fail_runs = {"status": 422, "detail": CONTENT}
    run = await provider.submit(request())
    await finished(fal, run)
    fal.fail_next("GET", rf"/requests/{run.run_id}$", 500)
    state = await provider.status(run)
    assert state.status is RunStatus.FAILED and isinstance(state.error, RunFailed)


async def test_success_without_images_is_a_failure(provider: FalProvider, fal: FakeFal) -> None:
    fal.empty_output = True
    run = await provider.submit(request())
    await finished(fal, run)
    state = await provider.status(run)
    assert state.status is RunStatus.FAILED and isinstance(state.error, RunFailed)


async def test_invalid_input_is_invalid_request(provider: FalProvider) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await provider.submit(request(prompt="a"))
    assert caught.value.code == "value_error.any_str.length"


async def test_content_refusal_at_submit_is_content_rejected(provider: FalProvider, fal: FakeFal) -> None:
    fal.fail_next("POST", "/edit$", 422, {"detail": [{"loc": [], "msg": "x", "type": "other"}, *CONTENT]})
    with pytest.raises(ContentRejected):
        await provider.submit(request())


async def test_wrong_key_is_auth_failed(fal: FakeFal, session: aiohttp.ClientSession) -> None:
    bad = FalProvider(FalSettings(api_key=SecretStr("wrong"), base_url=fal.base_url), session)
    with pytest.raises(AuthFailed):
        await bad.submit(request())


async def test_rate_limit_carries_retry_after(provider: FalProvider, fal: FakeFal) -> None:
    fal.rate_limit_next("POST", "/edit$", retry_after=2.5)
    with pytest.raises(RateLimited) as caught:
        await provider.submit(request())
    assert caught.value.retry_after == 2.5


@pytest.mark.parametrize("fault", ["500", "malformed", "reset", "not-an-object", "no-urls"])
async def test_submit_outages_are_unavailable(fault: str, provider: FalProvider, fal: FakeFal) -> None:
    if fault == "500":
        fal.fail_next(
            "POST",
            "/edit$",
            503,
            {"detail": "Runner scheduling failure", "error_type": "runner_scheduling_failure"},
        )
    elif fault == "malformed":
        fal.fail_next("POST", "/edit$", 200, b"{not json")
    elif fault == "reset":
        fal.reset_next("POST", "/edit$")
    elif fault == "not-an-object":
        fal.fail_next("POST", "/edit$", 200, ["request_id"])
    else:
        fal.fail_next("POST", "/edit$", 200, {"request_id": "r1"})
    with pytest.raises(Unavailable):
        await provider.submit(request())


@pytest.mark.parametrize("fault", ["timeout", "unknown-status"])
async def test_status_outages_are_unavailable(fault: str, provider: FalProvider, fal: FakeFal) -> None:
    run = await provider.submit(request())
    if fault == "timeout":
        fal.hang_next("GET", "/status$", 5.0)
    else:
        fal.fail_next("GET", "/status$", 200, {"status": "PAUSED"})
    with pytest.raises(Unavailable):
        await provider.status(run)


async def test_cancel_answers_follow_the_run(provider: FalProvider, fal: FakeFal) -> None:
    fal.queue_paused = True
    queued = await provider.submit(request())
    assert await provider.cancel(queued) is True
    fal.hold = True
    fal.queue_paused = False
    running = await provider.submit(request())
    await fal.wait_status(running.run_id, "IN_PROGRESS")
    assert await provider.cancel(running) is True
    await finished(fal, running)
    assert await provider.cancel(running) is False  # ALREADY_COMPLETED
    fal.fail_next("PUT", "/cancel$", 500)
    assert await provider.cancel(queued) is False
    assert (
        await provider.cancel(
            Run("fal", "x", {"cancel_url": f"{fal.base_url}/openai/gpt-image-2/requests/x/cancel"})
        )
        is False
    )


@pytest.mark.parametrize(
    ("body", "parsed"),
    [
        (
            {"detail": "Request timed out", "error_type": "request_timeout"},
            ("request_timeout", "Request timed out"),
        ),
        ({"detail": [{"msg": "a", "type": "t1"}, {"msg": "b", "type": "t2"}]}, ("t1", "a; b")),
        ({"detail": [{"msg": "a", "type": "t1"}, *CONTENT]}, ("content_policy_violation", "a; flagged")),
        ({"detail": []}, (None, None)),
        ("oops", (None, None)),
    ],
)
def test_error_bodies(body: object, parsed: tuple[str | None, str | None]) -> None:
    assert parse_error(body) == parsed
