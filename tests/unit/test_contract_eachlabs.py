"""each::labs as its documents describe it: the client fed the documented example payloads.

Every payload here is copied from each::labs' docs (docs.eachlabs.ai; source repository
eachlabs/mintlify-docs at f10dd45), with its page named beside it. The documented replies are
served over a real socket by the loopback fake (its `fail_next` answers before auth and routing),
so the client reads them exactly as it would read each::labs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from bot.providers.base import (
    ContentRejected,
    EditRequest,
    ImageRef,
    InvalidRequest,
    OutputImage,
    RunFailed,
    RunStatus,
)
from bot.providers.eachlabs import EachlabsProvider, prediction_state
from bot.providers.eachlabs import parse_callback as parse_eachlabs_webhook
from bot.providers.eachlabs import verify_callback as verify_eachlabs
from bot.providers.settings import EachlabsSettings, ProvidersSettings
from bot.runtime.config import WebSettings
from bot.runtime.metrics import Metrics
from bot.web.server import Callbacks, Exposition, Health, build_app, callback_hosts
from storage.jobs import JobRepository
from storage.store import open_db
from tests.fakes.eachlabs import KNOWN_MODEL, FakeEachlabs

# https://docs.eachlabs.ai/api/predictions/create-prediction ("Response")
CREATED: dict[str, Any] = {
    "status": "success",
    "message": "Prediction created successfully",
    "predictionID": "abc123-def456-ghi789",
}

# https://docs.eachlabs.ai/api/predictions/get-prediction ("Response")
POLLED: dict[str, Any] = {
    "id": "abc123-def456-ghi789",
    "input": {"prompt": "A beautiful sunset over the ocean with vibrant colors", "aspect_ratio": "16:9"},
    "status": "success",
    "output": "https://storage.example.com/predictions/abc123/image.jpg",
    "logs": None,
    "metrics": {"predict_time": 12.5, "cost": 0.05},
    "urls": {
        "cancel": "https://api.eachlabs.ai/v1/prediction/abc123-def456-ghi789/cancel",
        "get": "https://api.eachlabs.ai/v1/prediction/abc123-def456-ghi789",
    },
}

# https://docs.eachlabs.ai/video/billing-limits#error-catalog ("A real $0 validation reject,
# captured from production, exactly as polled")
VALIDATION_REJECT: dict[str, Any] = {
    "id": "1e44fdd0-a565-4f59-908c-c4625dfe5395",
    "input": {
        "capability": "silence_remove",
        "input_url": "https://cdn-us.eachlabs.ai/uploads/35b956ed-0907-474c-86f9-7f3c418212c2.mp4",
        "params": {"ranges": [{"end": 210, "start": 200}]},
        "tier": "cpu",
    },
    "logs": None,
    "status": "error",
    "output": {
        "classification": {"category": "VALIDATION"},
        "error": "Execution failed",
        "error_code": "INPUT_VALIDATION_ERROR",
        "error_message": "ranges: range start 200s is at or beyond source duration 5s (empty output)",
        "error_step": "Surface Customer Reject.0",
        "execution_id": "1e44fdd0-a565-4f59-908c-c4625dfe5395",
        "model_id": "e3b3d84f-a2dc-46a3-b6e7-e9d80face367",
        "model_slug": "eachlabs-video-api",
        "provider": "videoapi",
        "retryable": False,
        "status": "ERROR",
        "success": False,
    },
    "metrics": {"predict_time": 3.439075, "cost": 0},
    "urls": {
        "cancel": "https://api.eachlabs.ai/v1/prediction/1e44fdd0-a565-4f59-908c-c4625dfe5395/cancel",
        "get": "https://api.eachlabs.ai/v1/prediction/1e44fdd0-a565-4f59-908c-c4625dfe5395",
    },
}

# The same page: "A real execution failure (exec_error ...), captured from production".
EXECUTION_FAILURE: dict[str, Any] = {
    "id": "f2762a7e-2362-40cf-be4a-b0cffe2e1177",
    "input": {
        "capability": "crop",
        "input_url": "https://cdn-us.eachlabs.ai/uploads/35b956ed-0907-474c-86f9-7f3c418212c2.mp4",
        "params": {"container": "mp4", "height": 7000, "width": 7000},
        "tier": "cpu",
    },
    "logs": None,
    "status": "error",
    "output": {
        "classification": {"category": "PROVIDER"},
        "error": "Execution failed",
        "error_code": "PROVIDER_FAILED",
        "error_message": "exec_error",
        "error_step": "poll",
        "execution_id": "f2762a7e-2362-40cf-be4a-b0cffe2e1177",
        "model_id": "e3b3d84f-a2dc-46a3-b6e7-e9d80face367",
        "model_slug": "eachlabs-video-api",
        "provider": "videoapi",
        "provider_error_code": "failed",
        "retryable": False,
        "status": "ERROR",
        "success": False,
    },
    "metrics": {"predict_time": 2.691812, "cost": 0},
    "urls": {
        "cancel": "https://api.eachlabs.ai/v1/prediction/f2762a7e-2362-40cf-be4a-b0cffe2e1177/cancel",
        "get": "https://api.eachlabs.ai/v1/prediction/f2762a7e-2362-40cf-be4a-b0cffe2e1177",
    },
}

# https://docs.eachlabs.ai/api/webhooks/payload-reference ("Prediction Succeeded")
WEBHOOK_SUCCEEDED: dict[str, Any] = {
    "exec_id": "abc123-def456-ghi789",
    "flow_id": None,
    "status": "succeeded",
    "output": {"url": "https://storage.example.com/predictions/abc123/image.jpg"},
    "error": "",
}

# The same page, "Prediction Failed".
WEBHOOK_FAILED: dict[str, Any] = {
    "exec_id": "abc123-def456-ghi789",
    "flow_id": None,
    "status": "failed",
    "output": [{"id": "", "status": "", "output": "", "error": "Error: Model timeout after 30s"}],
    "error": "",
}

# https://docs.eachlabs.ai/video/billing-limits#cancelling-a-prediction: a cancel "answers
# {"status": "success", "message": "Prediction canceled successfully", ...}".
CANCELLED: dict[str, Any] = {"status": "success", "message": "Prediction canceled successfully"}


@pytest.fixture
async def each() -> AsyncIterator[FakeEachlabs]:
    async with FakeEachlabs() as server:
        yield server


@pytest.fixture
async def provider(each: FakeEachlabs) -> AsyncIterator[EachlabsProvider]:
    async with aiohttp.ClientSession() as session:
        settings = EachlabsSettings(
            api_key=SecretStr(each.api_key),
            base_url=each.base_url,
            model=KNOWN_MODEL,
            request_timeout=2.0,
            callback_secret=SecretStr("your-secret-key"),
        )
        yield EachlabsProvider(settings, session)


def edit() -> EditRequest:
    return EditRequest(job_id=1, prompt="p", images=[ImageRef("a.png", url="http://127.0.0.1:9/a.png")])


async def test_create_authenticates_with_the_documented_bearer_and_reads_the_prediction_id(
    provider: EachlabsProvider, each: FakeEachlabs
) -> None:
    """https://docs.eachlabs.ai/authentication: "All each::labs APIs authenticate requests with
    your API key sent as a Bearer token in the Authorization header"."""
    each.fail_next("POST", "/v1/prediction$", 200, CREATED)
    run = await provider.submit(edit(), callback_url="http://127.0.0.1:9/hook")
    assert run.run_id == "abc123-def456-ghi789"
    sent = each.requests[0]
    assert sent.headers["Authorization"] == f"Bearer {each.api_key}"
    assert "X-API-Key" not in sent.headers
    assert sent.json["webhook_url"] == "http://127.0.0.1:9/hook"
    assert sent.json["webhook_secret"] == "your-secret-key"


async def test_the_documented_prediction_is_one_image_with_its_cost(
    provider: EachlabsProvider, each: FakeEachlabs
) -> None:
    each.fail_next("POST", "/v1/prediction$", 200, CREATED)
    run = await provider.submit(edit())
    each.fail_next("GET", "/v1/prediction/", 200, POLLED)
    state = await provider.status(run)
    assert state.status is RunStatus.SUCCEEDED and state.result is not None
    assert list(state.result.images) == [OutputImage(url=POLLED["output"])]
    assert state.result.usd_micros == 50_000 and state.result.duration_ms == 12_500


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("created", RunStatus.QUEUED),
        ("starting", RunStatus.QUEUED),
        ("processing", RunStatus.RUNNING),
        ("cancelled", RunStatus.CANCELLED),
    ],
)
def test_every_documented_unfinished_status(status: str, expected: RunStatus) -> None:
    """https://docs.eachlabs.ai/api/predictions/get-prediction, "Prediction Status Values":
    `created` is "Prediction is queued, not yet started"."""
    assert prediction_state({**POLLED, "status": status, "output": None}).status is expected


@pytest.mark.parametrize(
    ("prediction", "kind", "message"),
    [
        (
            VALIDATION_REJECT,
            InvalidRequest,
            "ranges: range start 200s is at or beyond source duration 5s (empty output)",
        ),
        (EXECUTION_FAILURE, RunFailed, "exec_error"),
    ],
)
def test_the_documented_error_envelopes_give_their_real_reason(
    prediction: dict[str, Any], kind: type[Exception], message: str
) -> None:
    state = prediction_state(prediction)
    assert state.status is RunStatus.FAILED and type(state.error) is kind
    assert state.error.message == message and state.error.code == prediction["output"]["error_code"]


def test_a_safety_refusal_is_content_rejected() -> None:
    """No documented example of a refused image exists. Built strictly from the documented
    fields: the envelope of the error catalog, and `content_moderation`, the canonical error
    classification of `GET /v1/executions` (openapi_specs/models.json, `error_classification`)."""
    refused = {
        **EXECUTION_FAILURE,
        "output": {
            **EXECUTION_FAILURE["output"],
            "classification": {"category": "content_moderation"},
            "error_message": "Your request was rejected by the safety system.",
        },
    }
    state = prediction_state(refused)
    assert isinstance(state.error, ContentRejected)
    assert state.error.message == "Your request was rejected by the safety system."


def test_a_dispatch_failure_envelope_carries_only_its_error() -> None:
    """The error catalog: "a dispatch failure at submit ... writes a minimal envelope carrying
    only `error`, set to the dispatch error text"."""
    failed = {**POLLED, "status": "error", "output": {"error": "dispatch refused: model offline"}}
    state = prediction_state(failed)
    assert isinstance(state.error, RunFailed) and state.error.message == "dispatch refused: model offline"


@pytest.mark.parametrize(
    ("output", "urls"),
    [
        ("https://x.test/1.png", ["https://x.test/1.png"]),
        (["https://x.test/1.png", "https://x.test/2.png"], ["https://x.test/1.png", "https://x.test/2.png"]),
        ({"url": "https://x.test/1.png"}, ["https://x.test/1.png"]),
        ({"images": [{"url": "https://x.test/1.png"}]}, ["https://x.test/1.png"]),
    ],
)
def test_output_as_a_string_an_array_or_an_object(output: Any, urls: list[str]) -> None:
    """get-prediction: `output` is "string | array | object" (type depends on model); the object
    form is the webhook page's `{"url": ...}`, or the fal-style `{images: [...]}`."""
    state = prediction_state({**POLLED, "output": output})
    assert state.result is not None and [image.url for image in state.result.images] == urls


def test_the_documented_succeeded_webhook_names_the_prediction_by_exec_id() -> None:
    """payload-reference: "`exec_id` — the prediction ID you received from Create Prediction"."""
    prediction_id, state = parse_eachlabs_webhook(json.dumps(WEBHOOK_SUCCEEDED).encode())
    assert prediction_id == CREATED["predictionID"]
    assert state.status is RunStatus.SUCCEEDED and state.result is not None
    assert [image.url for image in state.result.images] == [WEBHOOK_SUCCEEDED["output"]["url"]]


def test_the_documented_failed_webhook_reads_its_reason_from_output() -> None:
    """payload-reference: "read `output[0].error` for the failure reason. The top-level `error`
    field is always an empty string"."""
    prediction_id, state = parse_eachlabs_webhook(json.dumps(WEBHOOK_FAILED).encode())
    assert prediction_id == CREATED["predictionID"] and state.status is RunStatus.FAILED
    assert isinstance(state.error, RunFailed) and state.error.message == "Error: Model timeout after 30s"


def test_the_webhook_secret_is_compared_verbatim() -> None:
    """payload-reference, "Webhook Secret Verification": "every delivery carries it verbatim in
    the X-Webhook-Secret header ... not an HMAC of the payload"."""
    body = json.dumps(WEBHOOK_SUCCEEDED).encode()
    assert verify_eachlabs(body, {"X-Webhook-Secret": "your-secret-key"}, "your-secret-key")
    assert verify_eachlabs(body, {"x-webhook-secret": "your-secret-key"}, "your-secret-key")
    assert not verify_eachlabs(body, {"X-Webhook-Secret": "your-secret-kez"}, "your-secret-key")
    assert not verify_eachlabs(body, {"X-Webhook-Secret": "your-secret-key "}, "your-secret-key")
    assert not verify_eachlabs(body, {"X-Webhook-Secret": "é"}, "your-secret-key")
    assert not verify_eachlabs(body, {}, "your-secret-key")
    assert not verify_eachlabs(body, {"X-Webhook-Secret": ""}, "")


async def test_cancel_reads_the_documented_answer(provider: EachlabsProvider, each: FakeEachlabs) -> None:
    each.fail_next("POST", "/cancel$", 200, CANCELLED)
    assert await provider.cancel(await provider.submit(edit())) is True


async def test_the_fakes_webhook_passes_the_bot_only_with_the_secret(tmp_path: Path) -> None:
    """End to end on loopback: the fake each::labs delivers its documented webhook to the bot's
    own callback endpoint, which checks `X-Webhook-Secret` when a secret is configured."""
    calls: list[tuple[str, str]] = []

    async def on_update(host: str, run_id: str) -> bool:
        calls.append((host, run_id))
        return True

    db = await open_db(tmp_path / "r.db")
    secret = "whsec_each"
    settings = ProvidersSettings(
        order=["eachlabs"],
        eachlabs=EachlabsSettings(api_key=SecretStr("k"), callback_secret=SecretStr(secret)),
    )
    app = build_app(
        Health(db, gateway_ready=lambda: True, accepting=lambda: True),
        Callbacks(callback_hosts(settings), on_update),
        Exposition(Metrics(), JobRepository(db)),
        limits=WebSettings(),
    )
    bot_web = TestServer(app, host="127.0.0.1")
    await bot_web.start_server()
    try:
        async with FakeEachlabs() as each, aiohttp.ClientSession() as session:
            each.webhook_retry_delays = ()
            url = str(bot_web.make_url("/callbacks/eachlabs"))
            good = EachlabsSettings(
                api_key=SecretStr(each.api_key), base_url=each.base_url, callback_secret=SecretStr(secret)
            )
            run = await EachlabsProvider(good, session).submit(edit(), callback_url=url)
            [genuine] = await each.wait_callbacks(1)
            assert genuine["headers"]["X-Webhook-Secret"] == secret and genuine["status"] == 200
            assert calls == [("eachlabs", run.run_id)]

            wrong = EachlabsSettings(
                api_key=SecretStr(each.api_key), base_url=each.base_url, callback_secret=SecretStr("guess")
            )
            await EachlabsProvider(wrong, session).submit(edit(), callback_url=url)
            forged = (await each.wait_callbacks(2))[1]
            assert forged["status"] == 401 and len(calls) == 1
    finally:
        await bot_web.close()
        await db.close()
