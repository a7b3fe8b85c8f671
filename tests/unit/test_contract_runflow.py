"""Runflow as its documents describe it: the client fed the documented payloads.

Payloads are copied from docs.runflow.io with the page beside each; where a page shows only a
schema (`"cost": "<string>"`), the payload is built strictly from its documented fields and the
test says so. Polled runs are served over a real socket by the loopback fake (`fail_next`
answers before auth and routing), so the client reads them exactly as it would read Runflow.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bot.providers.base import EditRequest, ImageRef, Run, RunStatus
from bot.providers.runflow import RunflowProvider, run_state
from bot.providers.runflow import parse_callback as parse_runflow_callback
from bot.providers.settings import RunflowSettings
from tests.conftest import StaticFiles
from tests.fakes.fal import WebhookSink
from tests.fakes.runflow import FakeRunflow
from tests.images import png

# https://docs.runflow.io/concepts/callbacks.md ("Callback payload")
CALLBACK: dict[str, Any] = {
    "event": "run.completed",
    "run_id": "01J0...",
    "status": "succeeded",
    "output": {"image_urls": ["https://..."]},
    "duration_ms": 102345,
    "created_at": "2026-05-06T10:00:00.000+00:00",
    "completed_at": "2026-05-06T10:01:42.000+00:00",
    "metadata": None,
}

RUN_ID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


def polled_run(**fields: Any) -> dict[str, Any]:
    """A run as `GET /v1/runs/{id}` returns it, from the fields of
    https://docs.runflow.io/api-reference/runs/get-run (whose example shows `"cost": "<string>"`);
    the output is the normalized `outputs[]` of https://docs.runflow.io/models/openai/gpt-image-2/edit."""
    run: dict[str, Any] = {
        "id": RUN_ID,
        "status_code": "succeeded",
        "input": {"prompt": "p", "image_urls": ["https://in.test/a.png"], "num_images": 2},
        "output": {
            "outputs": [
                {"type": "image", "url": "https://out.test/1.png"},
                {"type": "image", "url": "https://out.test/2.png"},
            ]
        },
        "duration_ms": 4200,
        "cost": "0.266",
        "client_ref": "retouch-job-1",
        "metadata": {"job_id": 1},
        "failure_code": None,
        "failure_message": None,
    }
    return run | fields


@pytest.fixture
async def provider(runflow: FakeRunflow) -> AsyncIterator[RunflowProvider]:
    async with aiohttp.ClientSession() as session:
        settings = RunflowSettings(api_key=SecretStr(runflow.api_key), base_url=runflow.base_url)
        yield RunflowProvider(settings, session)


def test_the_documented_callback() -> None:
    run_id, state = parse_runflow_callback(json.dumps(CALLBACK).encode())
    assert run_id == "01J0..." and state.status is RunStatus.SUCCEEDED and state.result is not None
    assert [image.url for image in state.result.images] == ["https://..."]
    assert state.result.duration_ms == 102345


def test_a_partial_succeeded_callback_is_a_success() -> None:
    """concepts/callbacks: `event` is one of run.completed, run.failed, run.cancelled,
    run.partial_succeeded, and `status` is the run's `status_code`; concepts/runs says to treat
    partial_succeeded "the same as succeeded". Built from the documented example."""
    partial = {**CALLBACK, "event": "run.partial_succeeded", "status": "partial_succeeded"}
    run_id, state = parse_runflow_callback(json.dumps(partial).encode())
    assert run_id == "01J0..." and state.status is RunStatus.SUCCEEDED


def test_a_cancelled_callback_in_either_spelling() -> None:
    """concepts/callbacks: event names say `cancelled`, `status_code` says `canceled`; output is
    null when cancelled."""
    for status in ("canceled", "cancelled"):
        body = {**CALLBACK, "event": "run.cancelled", "status": status, "output": None}
        assert parse_runflow_callback(json.dumps(body).encode())[1].status is RunStatus.CANCELLED


async def test_the_documented_string_cost_is_the_spend(
    runflow: FakeRunflow, provider: RunflowProvider
) -> None:
    runflow.fail_next("GET", "/v1/runs/", 200, polled_run())
    state = await provider.status(Run("runflow", RUN_ID))
    assert state.result is not None and state.result.usd_micros == 266_000


async def test_a_partial_run_delivers_only_the_images_it_has_at_its_cost(
    runflow: FakeRunflow, provider: RunflowProvider
) -> None:
    """Two asked for, one made: the result lists one image, and the spend is Runflow's `cost`."""
    output = {"outputs": [{"type": "image", "url": "https://out.test/1.png"}]}
    runflow.fail_next(
        "GET", "/v1/runs/", 200, polled_run(status_code="partial_succeeded", output=output, cost="0.133")
    )
    state = await provider.status(Run("runflow", RUN_ID))
    assert state.status is RunStatus.SUCCEEDED and state.result is not None
    assert [image.url for image in state.result.images] == ["https://out.test/1.png"]
    assert state.result.usd_micros == 133_000


@pytest.mark.parametrize("cost", ["", "abc", "NaN", "Infinity", "-0.5", "1e400", "1e9", None, True])
def test_a_cost_that_is_no_amount_leaves_the_estimate(cost: Any) -> None:
    state = run_state(polled_run(cost=cost))
    assert state.result is not None and state.result.usd_micros is None


async def test_the_fake_reports_cost_as_a_string_and_partial_runs(
    runflow: FakeRunflow, provider: RunflowProvider, static_files: StaticFiles
) -> None:
    """The fake follows the documented schema too: a string `cost`, and a partial run that ends
    `partial_succeeded` with the images it made and a `run.partial_succeeded` callback."""
    runflow.partial_images = 1
    async with WebhookSink() as sink:
        image = ImageRef("a.png", url=static_files.add("a.png", png()))
        run = await provider.submit(
            EditRequest(job_id=1, prompt="p", images=[image], count=2, quality="high"),
            callback_url=sink.url,
        )
        [(body, _)] = await sink.wait()
    polled = runflow.runs[run.run_id].to_api()
    assert polled["status_code"] == "partial_succeeded" and isinstance(polled["cost"], str)
    assert json.loads(body)["event"] == "run.partial_succeeded"
    state = await provider.status(run)
    assert state.result is not None and len(state.result.images) == 1
    assert state.result.usd_micros == 133_000
