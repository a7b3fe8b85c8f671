"""Callback verification and parsing, against real deliveries from the fakes and fuzzed bodies."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import (
    ContentRejected,
    EditRequest,
    ImageRef,
    InvalidRequest,
    RunFailed,
    RunStatus,
)
from bot.providers.eachlabs import parse_callback as parse_eachlabs_webhook
from bot.providers.eachlabs import verify_callback as verify_eachlabs
from bot.providers.fal import parse_callback as parse_fal_webhook
from bot.providers.runflow import RunflowProvider
from bot.providers.runflow import parse_callback as parse_runflow_callback
from bot.providers.runflow import verify_callback as verify_runflow
from bot.providers.settings import RunflowSettings
from tests.conftest import StaticFiles
from tests.fakes.fal import WebhookSink
from tests.fakes.runflow import FakeRunflow
from tests.images import png

SECRET = "whsec_test"


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
async def signed_runflow() -> AsyncIterator[FakeRunflow]:
    fake = FakeRunflow(callback_secret=SECRET)
    fake.callback_retry_delays = ()
    await fake.start()
    yield fake
    await fake.close()


async def delivered(fake: FakeRunflow, static_files: StaticFiles) -> tuple[str, bytes, dict[str, str]]:
    """Run one edit on the fake Runflow and return (run id, callback body, callback headers)."""
    settings_ = RunflowSettings(api_key=SecretStr(fake.api_key), base_url=fake.base_url)
    async with aiohttp.ClientSession() as session, WebhookSink() as sink:
        edit = EditRequest(
            job_id=1, prompt="p", images=[ImageRef("a.png", url=static_files.add("a.png", png()))]
        )
        run = await RunflowProvider(settings_, session).submit(edit, callback_url=sink.url)
        [(body, headers)] = await sink.wait()
    return run.run_id, body, headers


async def test_a_genuine_runflow_callback_verifies_and_parses(
    signed_runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    run_id, body, headers = await delivered(signed_runflow, static_files)
    assert verify_runflow(body, headers, SECRET)
    assert verify_runflow(body, {k.lower(): v for k, v in headers.items()}, SECRET)
    parsed_id, state = parse_runflow_callback(body)
    assert parsed_id == run_id
    assert state.status is RunStatus.SUCCEEDED and state.result is not None and state.result.images


async def test_a_failed_runflow_run_parses_to_its_typed_error(
    signed_runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    signed_runflow.fail_runs = {"failure_code": "CONTENT_POLICY_VIOLATION", "failure_message": "flagged"}
    _, body, _ = await delivered(signed_runflow, static_files)
    _, state = parse_runflow_callback(body)
    assert state.status is RunStatus.FAILED and isinstance(state.error, ContentRejected)
    assert state.error.message == "flagged"


async def test_a_forged_runflow_callback_does_not_verify(
    signed_runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    signed_runflow.callback_mode = "forged"
    _, body, headers = await delivered(signed_runflow, static_files)
    assert not verify_runflow(body, headers, SECRET)


@pytest.mark.parametrize(
    ("headers", "secret"),
    [
        ({}, SECRET),
        ({"Runflow-Signature": sign(b"{}")}, ""),
        ({"Runflow-Signature": sign(b"{}", "other")}, SECRET),
        ({"Runflow-Signature": "é" * 64}, SECRET),
        ({"Runflow-Signature": sign(b"{} ")}, SECRET),
    ],
)
def test_runflow_signature_rejections(headers: dict[str, str], secret: str) -> None:
    assert not verify_runflow(b"{}", headers, secret)


def test_runflow_signature_accepts_upper_case_hex_and_any_header_case() -> None:
    assert verify_runflow(b"{}", {"RUNFLOW-SIGNATURE": sign(b"{}").upper()}, SECRET)


def test_runflow_cancelled_callback() -> None:
    body = json.dumps(
        {"event": "run.cancelled", "run_id": "r", "status": "cancelled", "output": None}
    ).encode()
    assert parse_runflow_callback(body)[1].status is RunStatus.CANCELLED


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"status": "succeeded"}, "run_id"),
        ({"run_id": "r", "status": "running"}, "status"),
        ({"run_id": "r", "status": "succeeded", "output": []}, "output"),
        ({"run_id": "r", "status": "succeeded", "output": {"outputs": 5}}, "outputs"),
        ({"run_id": "r", "status": "succeeded", "output": {"nsfw_detected": "yes"}}, "nsfw"),
    ],
)
def test_malformed_runflow_callbacks(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_runflow_callback(json.dumps(payload).encode())


def test_fal_webhook_shapes() -> None:
    ok = {"request_id": "q", "status": "OK", "payload": {"images": [{"url": "http://x/1.png"}], "seed": 3}}
    request_id, state = parse_fal_webhook(json.dumps(ok).encode())
    assert request_id == "q" and state.result is not None and state.result.seed == 3

    invalid = {
        "request_id": "q",
        "status": "ERROR",
        "error": "Invalid status code: 422",
        "payload": {
            "detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]
        },
    }
    state = parse_fal_webhook(json.dumps(invalid).encode())[1]
    assert isinstance(state.error, InvalidRequest) and state.error.message == "field required"

    crashed = {"request_id": "q", "status": "ERROR", "error": "Runner crashed", "payload": None}
    state = parse_fal_webhook(json.dumps(crashed).encode())[1]
    assert isinstance(state.error, RunFailed) and state.error.message == "Runner crashed"

    unserialisable = {"request_id": "q", "status": "OK", "payload": None, "payload_error": "too big"}
    state = parse_fal_webhook(json.dumps(unserialisable).encode())[1]
    assert state.status is RunStatus.FAILED and isinstance(state.error, RunFailed)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[1]",
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"status": "OK", "payload": {}}',
        b'{"request_id": "q", "status": "PENDING"}',
        b'{"request_id": "q", "status": "OK", "payload": "x"}',
    ],
)
def test_malformed_fal_webhooks(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_fal_webhook(body)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"exec_id": "p", "status": "warming"}, "status"),
        # The poll's vocabulary is not the webhook's (payload-reference: succeeded | failed).
        ({"exec_id": "p", "status": "success"}, "status"),
        ({"id": "p", "status": "succeeded"}, "exec_id"),
        ({"exec_id": "", "status": "failed"}, "exec_id"),
    ],
)
def test_malformed_eachlabs_webhooks(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_eachlabs_webhook(json.dumps(payload).encode())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Bodies shaped like the real thing, so the fuzzing reaches past the first checks.
OUTPUT = st.fixed_dictionaries(
    {},
    optional={
        "outputs": JSON,
        "images": st.lists(st.dictionaries(st.sampled_from(["url", "width", "content_type", "type"]), JSON))
        | JSON,
        "image_urls": JSON,
        "seed": JSON,
        "nsfw_detected": JSON,
        "has_nsfw_concepts": JSON,
        "usage": JSON,
        "detail": JSON,
    },
)
SHAPED = st.fixed_dictionaries(
    {
        "run_id": st.text(max_size=4) | JSON,
        "request_id": st.text(max_size=4) | JSON,
        "exec_id": st.text(max_size=4) | JSON,
        "status": st.sampled_from(
            ["succeeded", "partial_succeeded", "failed", "canceled", "cancelled", "OK", "ERROR"]
        )
        | JSON,
    },
    optional={
        "output": OUTPUT | JSON,
        "payload": OUTPUT | JSON,
        "metrics": st.dictionaries(st.sampled_from(["cost", "predict_time"]), JSON) | JSON,
        "duration_ms": JSON,
        "error": JSON,
        "failure_code": JSON,
        "payload_error": JSON,
    },
)
PARSERS = (parse_runflow_callback, parse_fal_webhook, parse_eachlabs_webhook)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=64)
    | JSON.map(lambda value: json.dumps(value).encode())
    | SHAPED.map(lambda value: json.dumps(value).encode())
)
def test_parsers_raise_nothing_but_value_error(body: bytes) -> None:
    for parse in PARSERS:
        with contextlib.suppress(ValueError):
            parse(body)


@settings(max_examples=100)
@given(
    body=st.binary(max_size=32),
    headers=st.dictionaries(st.text(max_size=20), st.text(max_size=70)),
    secret=st.text(),
)
def test_verify_never_raises(body: bytes, headers: dict[str, str], secret: str) -> None:
    assert verify_runflow(body, headers, secret) in (True, False)
    assert verify_eachlabs(body, headers, secret) is (
        bool(secret) and any(k.lower() == "x-webhook-secret" and v == secret for k, v in headers.items())
    )
