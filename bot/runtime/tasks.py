"""One owner for the tasks that run beside the bot's requests (workers, recovery, pruning).

The event loop keeps only weak references to tasks, so a task nobody holds can vanish mid-run;
a task that fails with nobody awaiting it is reported only when it is garbage-collected, if
ever; and a task left running at shutdown outlives the database it writes to. The supervisor
holds every task it starts, logs a failure once when it happens, and on `stop` cancels them all
and waits until each has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run `work` in the background until it ends or `stop` is called."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so asyncio does not report it a second time
        if error is not None:
            log.error("background task %s failed", task.get_name(), exc_info=error)

    async def settle(self, within: float) -> None:
        """Wait up to `within` seconds for the tasks running now to end on their own."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)

    async def stop(self) -> None:
        """Cancel every task and wait for each to end, including any started while stopping."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
