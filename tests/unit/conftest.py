"""The started job service most unit tests of the core run against (see `tests.unit.test_jobs`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.providers.runflow import RunflowProvider
from bot.providers.settings import RunflowSettings
from tests.fakes.runflow import FakeRunflow
from tests.unit.test_jobs import Harness, running


@pytest.fixture
async def harness(tmp_path: Path, store_url: str, runflow: FakeRunflow) -> AsyncIterator[Harness]:
    """On each backend (`store_url`)."""
    settings = RunflowSettings(api_key=SecretStr(runflow.api_key), base_url=runflow.base_url)
    async with running(tmp_path, settings, RunflowProvider, store_url=store_url) as started:
        yield started
