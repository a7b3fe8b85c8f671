"""The in-flight limits hold under a burst: counting and inserting are one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.edits import TooManyJobs
from bot.providers.runflow import RunflowProvider
from bot.providers.settings import RunflowSettings
from bot.runtime.config import CreditsSettings
from storage.jobs import Job
from tests.fakes.runflow import FakeRunflow
from tests.unit.test_jobs import Harness, order, running

BURST = 8
URL = "http://127.0.0.1:9/a.png"  # never fetched: the jobs are created, not put in line


@pytest.fixture
async def limited(tmp_path: Path, store_url: str, runflow: FakeRunflow) -> AsyncIterator[Harness]:
    settings = RunflowSettings(api_key=SecretStr(runflow.api_key), base_url=runflow.base_url)
    async with running(
        tmp_path,
        settings,
        RunflowProvider,
        credit_settings=CreditsSettings(default_allowance=1000),
        max_per_member=1,
        max_per_server=1,
        store_url=store_url,
    ) as started:
        yield started


async def _burst(harness: Harness, user_ids: list[int]) -> tuple[list[Job], list[TooManyJobs]]:
    """Create one edit per user id, all at once, as simultaneous /edits do."""
    estimate = harness.service.estimate(order(URL).options)
    outcomes = await asyncio.gather(
        *(harness.service.create(replace(order(URL), user_id=user), estimate) for user in user_ids),
        return_exceptions=True,
    )
    created = [outcome for outcome in outcomes if isinstance(outcome, Job)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, TooManyJobs)]
    assert len(created) + len(refused) == len(user_ids), outcomes
    return created, refused


async def test_simultaneous_edits_by_one_member_open_one_job(limited: Harness) -> None:
    created, refused = await _burst(limited, [3] * BURST)
    assert len(await limited.repo.open_jobs()) == 1
    assert len(created) == 1
    assert {(error.scope, error.limit) for error in refused} == {("member", 1)}
    balance = await limited.credits.balance(1, 3)
    assert balance.reserved == 14  # only the one job holds credits


async def test_simultaneous_edits_in_one_server_open_one_job(limited: Harness) -> None:
    members = list(range(100, 100 + BURST))
    created, refused = await _burst(limited, members)
    assert len(await limited.repo.open_jobs()) == 1
    assert len(created) == 1
    assert {(error.scope, error.limit) for error in refused} == {("server", 1)}
    reserved = [(await limited.credits.balance(1, member)).reserved for member in members]
    assert sorted(reserved) == [0] * (BURST - 1) + [14]
