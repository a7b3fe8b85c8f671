"""The Runflow client against the loopback fake that follows Runflow's documented API."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import RunflowSettings
from tests.conftest import StaticFiles
from tests.fakes.runflow import FakeRunflow
from tests.images import png


@pytest.fixture
async def provider(runflow: FakeRunflow) -> AsyncIterator[RunflowProvider]:
    async with aiohttp.ClientSession() as session:
        settings = RunflowSettings(
            api_key=SecretStr(runflow.api_key), base_url=runflow.base_url, request_timeout=2.0
        )
        yield RunflowProvider(settings, session)


def request(url: str, **overrides: object) -> EditRequest:
    fields: dict[str, object] = {
        "job_id": 7,
        "prompt": "make it blue",
        "images": [ImageRef("a.png", url=url)],
    }
    fields.update(overrides)
    return EditRequest(**fields)  # type: ignore[arg-type]


async def test_submit_and_poll_to_success(
    provider: RunflowProvider, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    url = static_files.add("a.png", png())
    run = await provider.submit(request(url, count=2, quality="low"))
    created = runflow.runs[run.run_id]
    assert created.input["image_urls"] == [url]
    assert created.input["num_images"] == 2 and created.input["quality"] == "low"
    assert created.metadata == {"job_id": 7}
    await runflow.wait_finished(run.run_id)
    state = await provider.status(run)
    assert state.status is RunStatus.SUCCEEDED
    assert state.result is not None and len(state.result.images) == 2
    assert state.result.usd_micros == 18_000
    result = await provider.result(run)
    assert result.images[0].url is not None


async def test_wrong_key_is_auth_failed(runflow: FakeRunflow, static_files: StaticFiles) -> None:
    async with aiohttp.ClientSession() as session:
        bad = RunflowProvider(RunflowSettings(api_key=SecretStr("wrong"), base_url=runflow.base_url), session)
        with pytest.raises(AuthFailed):
            await bad.submit(request(static_files.add("a.png", png())))


async def test_invalid_input_is_invalid_request(provider: RunflowProvider) -> None:
    with pytest.raises(InvalidRequest):
        await provider.submit(request("ftp://nowhere/a.png"))


@pytest.mark.parametrize("dimensions", [(2048, 2048), None])
async def test_sizes_above_1k_are_refused_before_any_request(
    dimensions: tuple[int, int] | None, provider: RunflowProvider, runflow: FakeRunflow
) -> None:
    assert provider.resolutions == frozenset({"1K"})
    with pytest.raises(InvalidRequest, match="only its preset sizes"):
        await provider.submit(request("http://127.0.0.1:9/a.png", resolution="2K", dimensions=dimensions))
    assert runflow.requests == []


async def test_rate_limit_carries_retry_after(
    provider: RunflowProvider, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.rate_limit_next("POST", r"/runs$", retry_after=2.5)
    with pytest.raises(RateLimited) as caught:
        await provider.submit(request(static_files.add("a.png", png())))
    assert caught.value.retry_after == 2.5


@pytest.mark.parametrize("fault", ["500", "malformed", "reset"])
async def test_outages_are_unavailable(
    fault: str, provider: RunflowProvider, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    if fault == "500":
        runflow.fail_next("POST", r"/runs$", 500)
    elif fault == "malformed":
        runflow.fail_next("POST", r"/runs$", 201, b"{not json")
    else:
        runflow.reset_next("POST", r"/runs$")
    with pytest.raises(Unavailable):
        await provider.submit(request(static_files.add("a.png", png())))


async def test_timeout_is_unavailable(
    provider: RunflowProvider, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.hang_next("GET", r"/v1/runs/", 5.0)
    run = await provider.submit(request(static_files.add("a.png", png())))
    with pytest.raises(Unavailable, match="did not answer"):
        await provider.status(run)


@pytest.mark.parametrize(
    ("failure_code", "kind"),
    [("CONTENT_POLICY_VIOLATION", ContentRejected), ("PROVIDER_ERROR", RunFailed)],
)
async def test_failed_runs_are_typed(
    failure_code: str,
    kind: type[Exception],
    provider: RunflowProvider,
    runflow: FakeRunflow,
    static_files: StaticFiles,
) -> None:
    runflow.fail_runs = {"failure_code": failure_code, "failure_message": "no"}
    run = await provider.submit(request(static_files.add("a.png", png())))
    await runflow.wait_finished(run.run_id)
    state = await provider.status(run)
    assert state.status is RunStatus.FAILED
    assert isinstance(state.error, kind)


async def test_success_without_images_is_a_failure(
    provider: RunflowProvider, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.empty_output = True
    run = await provider.submit(request(static_files.add("a.png", png())))
    await runflow.wait_finished(run.run_id)
    state = await provider.status(run)
    assert state.status is RunStatus.FAILED and isinstance(state.error, RunFailed)


async def test_nsfw_flag_is_carried(
    provider: RunflowProvider, runflow: FakeRunflow, static_files: StaticFiles
) -> None:
    runflow.nsfw = True
    run = await provider.submit(request(static_files.add("a.png", png())))
    await runflow.wait_finished(run.run_id)
    state = await provider.status(run)
    assert state.result is not None and state.result.nsfw


async def test_unknown_run_is_invalid(provider: RunflowProvider) -> None:
    with pytest.raises(InvalidRequest):
        await provider.status(Run("runflow", "00000000-0000-0000-0000-000000000000"))
