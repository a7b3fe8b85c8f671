"""One budget, in bytes, for the pixels the bot holds at once.

A small file can stand for a large picture (an 86 KiB PNG decodes to 80 MB of 16-bit grey,
and converting it used to take 480 MB), so counting decodes bounds nothing: three `/edit`s
with four such files took the process from 160 MB to 1.75 GB. Every decode, conversion and
encode therefore asks this budget for what it will hold at its worst, estimated from the
file's header before any pixel is read, and waits until that much is free.

The budget is the process's, as the memory is: `shared()` is the one every caller uses, sized
from the configuration at start-up.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import functools
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

MB = 1_000_000
DEFAULT_BYTES = 200 * MB  # editing.image_memory_mb's default
# glibc's mallopt parameter, and the size from which allocations get pages of their own.
_M_MMAP_THRESHOLD = -3
_OWN_PAGES_FROM = 1 << 20


class MemoryBudget:
    """An asyncio semaphore weighted in bytes, first come first served.

    Strict order keeps a large request from being starved by a stream of small ones that
    would each fit beside it. A request for more than the whole budget is not refused (the
    caller has already decided the picture is acceptable) and cannot deadlock: it waits until
    nothing else holds any of the budget and then runs alone.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a memory budget needs at least one byte, not {capacity}")
        self._capacity = capacity
        self._used = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def used(self) -> int:
        return self._used

    def resize(self, capacity: int) -> None:
        """A new size, for the configuration read at start-up; waiters that now fit go."""
        if capacity < 1:
            raise ValueError(f"a memory budget needs at least one byte, not {capacity}")
        self._capacity = capacity
        self._wake()

    async def acquire(self, amount: int) -> int:
        """Wait until `amount` bytes are free and take them; returns the share to `release`.

        A cancelled waiter leaves the line; one cancelled just after being let in gives its
        share back, so cancellation never leaks capacity.
        """
        share = min(max(amount, 0), self._capacity)
        if not self._waiting and self._used + share <= self._capacity:
            self._used += share
            return share
        entry = (share, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self.release(share)
            else:
                self._waiting.remove(entry)
                self._wake()  # whoever stood behind it may fit now
            raise
        return share

    def release(self, share: int) -> None:
        self._used -= share
        self._wake()

    def _wake(self) -> None:
        # Only from the front: letting a later, smaller request pass would starve the first.
        while self._waiting:
            share, future = self._waiting[0]
            if self._used + share > self._capacity and self._used > 0:
                return
            self._waiting.popleft()
            self._used += share
            future.set_result(None)

    async def run(
        self, estimate: Callable[P, int], work: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`work(*args)` on a pixel thread once the bytes `estimate(*args)` says it needs are free.

        The estimate reads only a header, but from untrusted bytes, so it runs in a thread too.
        The share is returned when the thread ends, not when the caller stops waiting: a
        cancelled edit's decode still holds its pixels until it finishes.
        """
        cost = await asyncio.to_thread(estimate, *args, **kwargs)
        share = await self.acquire(cost)
        call = functools.partial(contextvars.copy_context().run, work, *args, **kwargs)
        try:
            future = asyncio.get_running_loop().run_in_executor(_PIXELS, call)
        except BaseException:
            self.release(share)
            raise
        future.add_done_callback(functools.partial(self._finished, share))
        return await asyncio.shield(future)

    def _finished(self, share: int, future: asyncio.Future[object]) -> None:
        if not future.cancelled():
            future.exception()  # seen here, so a caller that left is not reported as ignoring it
        self.release(share)


_SHARED = MemoryBudget(DEFAULT_BYTES)
# Pixel work is CPU-bound C that lets go of the GIL: one thread per core keeps every core busy,
# and more would only hold more pictures at once. It has threads of its own, so file reads and
# writes (asyncio's default pool) never queue behind a 4K fit, nor it behind them.
_PIXELS = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="pixels")


def shared() -> MemoryBudget:
    """The process's budget."""
    return _SHARED


def configure(capacity: int) -> None:
    """Size the process's budget, and make the pixels it lets go of go back to the system.

    glibc raises its mmap threshold each time a large block is freed, so after the first few
    pictures Pillow's 16 MB blocks come from per-thread heaps that keep them once freed: with a
    400 MB budget the issue's load still reached 705 MB above idle, and 335 MB with the
    threshold fixed at 1 MiB, where every such block is mapped and unmapped on its own.
    Elsewhere than glibc (musl has no such threshold) this is skipped.
    """
    _SHARED.resize(capacity)
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _OWN_PAGES_FROM)
