"""`python -m bot check-hosts` as an owner runs it, against the loopback fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.test_cli import run_cli
from tests.fakes.fal import FakeFal
from tests.fakes.runflow import FakeRunflow


@pytest.fixture
async def fal() -> AsyncIterator[FakeFal]:
    async with FakeFal() as fake:
        yield fake


def env_for(
    runflow: FakeRunflow, fal: FakeFal, tmp_path: Path, runflow_key: str | None = None
) -> dict[str, str]:
    return {
        "RETOUCH_DISCORD__TOKEN": "x",
        "RETOUCH_PROVIDERS__ORDER": '["runflow", "fal"]',
        "RETOUCH_PROVIDERS__RUNFLOW__API_KEY": runflow_key or runflow.api_key,
        "RETOUCH_PROVIDERS__RUNFLOW__BASE_URL": runflow.base_url,
        "RETOUCH_PROVIDERS__FAL__API_KEY": fal.api_key,
        "RETOUCH_PROVIDERS__FAL__BASE_URL": fal.base_url,
        "RETOUCH_PROVIDERS__POLL_INTERVAL": "0.05",
        "RETOUCH_PROVIDERS__POLL_INTERVAL_MAX": "0.1",
        "RETOUCH_STORAGE__PATH": str(tmp_path / "r.db"),
        "RETOUCH_STORAGE__FILES_DIR": str(tmp_path / "files"),
    }


async def test_every_host_in_the_order_is_checked_and_reported(
    runflow: FakeRunflow, fal: FakeFal, tmp_path: Path
) -> None:
    runflow.honour_mask = True
    code, out, err = await run_cli("check-hosts", env=env_for(runflow, fal, tmp_path), cwd=tmp_path)
    assert code == 0, out + err
    assert "runflow: passed" in out and "fal: passed" in out and "2 of 2 hosts passed." in out
    runflow_part = out[out.index("runflow: passed") :].split("\n")[:8]
    assert [line.split()[0] for line in runflow_part[1:]] == [
        "reachable",
        "key",
        "statuses",
        "output",
        "time",
        "cost",
        "mask",
    ]
    assert "  output         1024×1024 PNG" in runflow_part
    assert "  mask           honoured (0.0% changed outside)" in runflow_part
    assert "  key accepted   yes" in out.split("fal: passed")[1]
    assert "Traceback" not in err
    # One edit each, nothing written where the bot keeps its files.
    assert len(runflow.runs) == 1 and len(fal.order) == 1
    assert not (tmp_path / "files").exists() and not (tmp_path / "r.db").exists()


async def test_a_rejected_key_fails_that_host_with_one_line_and_exit_1(
    runflow: FakeRunflow, fal: FakeFal, tmp_path: Path
) -> None:
    env = env_for(runflow, fal, tmp_path, runflow_key="rf-wrong-key")
    code, out, err = await run_cli("check-hosts", "--host", "runflow", env=env, cwd=tmp_path)
    assert code == 1
    assert "runflow: FAILED, key rejected (HTTP 401" in out and "providers.runflow.api_key" in out
    assert "0 of 1 hosts passed." in out
    assert not fal.order  # --host checks that host alone
    assert "Traceback" not in err and "rf-wrong-key" not in out + err
