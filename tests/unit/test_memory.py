"""The memory budget: strict order, room for what is larger than the whole, nothing leaked."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from bot.pictures.memory import MemoryBudget


async def granted(task: asyncio.Task[int]) -> bool:
    """Whether `task` has its share, once every ready callback has run."""
    for _ in range(5):
        await asyncio.sleep(0)  # yields only: lets woken waiters run, waits for nothing else
    return task.done()


async def test_a_large_request_is_not_passed_by_smaller_ones_that_would_fit() -> None:
    budget = MemoryBudget(100)
    first = await budget.acquire(60)
    large = asyncio.create_task(budget.acquire(50))
    small = asyncio.create_task(budget.acquire(10))
    assert not await granted(large)
    assert not await granted(small)  # 60 + 10 fits, but it came after the large one
    budget.release(first)
    assert await granted(large) and await granted(small)
    assert budget.used == 60


async def test_a_request_larger_than_the_budget_waits_and_then_runs_alone() -> None:
    budget = MemoryBudget(100)
    first = await budget.acquire(10)
    huge = asyncio.create_task(budget.acquire(500))
    after = asyncio.create_task(budget.acquire(1))
    assert not await granted(huge)
    budget.release(first)
    assert await granted(huge)
    assert not await granted(after)
    budget.release(huge.result())
    assert await granted(after)
    budget.release(after.result())
    assert budget.used == 0


async def test_a_cancelled_waiter_leaks_no_capacity_and_lets_those_behind_it_in() -> None:
    budget = MemoryBudget(100)
    first = await budget.acquire(60)
    waiting = asyncio.create_task(budget.acquire(50))
    behind = asyncio.create_task(budget.acquire(30))
    assert not await granted(behind)
    waiting.cancel()
    assert await granted(behind)  # 60 + 30 fits once the 50 ahead of it left the line
    budget.release(first)
    budget.release(behind.result())
    assert budget.used == 0
    assert await budget.acquire(100) == 100


async def test_a_waiter_cancelled_just_as_it_is_let_in_gives_its_share_back() -> None:
    budget = MemoryBudget(100)
    first = await budget.acquire(100)
    waiting = asyncio.create_task(budget.acquire(50))
    assert not await granted(waiting)
    budget.release(first)  # lets it in: its share is taken for it ...
    waiting.cancel()  # ... but it is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert budget.used == 0


async def test_work_keeps_its_share_until_its_thread_ends_even_when_the_caller_is_cancelled() -> None:
    budget = MemoryBudget(100)
    started, finish = threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        finish.wait(10)
        return "done"

    caller = asyncio.create_task(budget.run(lambda: 80, work))
    assert await asyncio.to_thread(started.wait, 10)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert budget.used == 80  # the pixels are still held by the thread
    finish.set()
    assert await asyncio.wait_for(budget.acquire(100), 10) == 100


async def test_estimates_that_fail_take_nothing() -> None:
    budget = MemoryBudget(100)

    def refuse() -> int:
        raise ValueError("not an image")

    with pytest.raises(ValueError, match="not an image"):
        await budget.run(refuse, lambda: None)
    assert budget.used == 0


def test_a_budget_needs_a_size() -> None:
    with pytest.raises(ValueError, match="at least one byte"):
        MemoryBudget(0)


async def test_pixel_work_has_one_thread_per_core_of_its_own() -> None:
    """Busy pixel threads hold up neither file work (asyncio's default pool) nor each other beyond
    one picture per core."""
    budget = MemoryBudget(1_000)
    cores = os.cpu_count() or 1
    running = threading.Semaphore(0)
    finish = threading.Event()

    def work() -> str:
        running.release()
        finish.wait(10)
        return threading.current_thread().name

    busy = [asyncio.create_task(budget.run(lambda: 1, work)) for _ in range(cores + 1)]
    try:
        for _ in range(cores):
            assert await asyncio.to_thread(running.acquire, True, 10)
        # Every pixel thread is busy: file work still runs, and one more picture waits.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "file"), 5) == "file"
        assert not await asyncio.to_thread(running.acquire, True, 0.2)
    finally:
        finish.set()
    names = await asyncio.gather(*busy)
    assert all(name.startswith("pixels") for name in names)
