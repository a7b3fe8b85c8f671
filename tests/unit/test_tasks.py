"""The supervisor of background tasks: a failure is logged once, and stop ends every task."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.runtime.tasks import Supervisor


async def test_a_failed_task_is_logged_once_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise ValueError("boom")

    supervisor = Supervisor()
    with caplog.at_level(logging.ERROR, logger="bot.runtime.tasks"):
        task = supervisor.spawn(broken(), name="broken-task")
        await asyncio.wait([task])
        await supervisor.stop()
    [record] = [record for record in caplog.records if record.exc_info]
    assert "broken-task" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)


async def test_stop_cancels_every_task_and_waits_for_each_to_end(caplog: pytest.LogCaptureFixture) -> None:
    ended: list[int] = []
    started = asyncio.Event()

    async def forever(n: int) -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits must still finish before stop returns
            ended.append(n)

    supervisor = Supervisor()
    tasks = [supervisor.spawn(forever(n), name=f"forever-{n}") for n in range(3)]
    await started.wait()
    with caplog.at_level(logging.ERROR, logger="bot.runtime.tasks"):
        await supervisor.stop()
    assert sorted(ended) == [0, 1, 2]
    assert all(task.cancelled() for task in tasks)
    assert not caplog.records  # a cancelled task is not a failure
