"""Writes that cost about the same whatever they carry (an fsync, a commit), shared by whoever
arrives while one is on its way.

A burst of 200 `/edit`s each waiting for its own fsync or commit, one after another, kept
members waiting for hundreds of milliseconds. So every item that arrives while a write is in
flight goes with the next one, together: an item waits for at most the write in flight plus its
own. One write at a time, in order; `add` returns once the write that carried its item returned,
and raises what that write raised.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._writing: asyncio.Future[None] | None = None  # held, so the loop cannot drop it

    async def add(self, item: T) -> None:
        """Return once `item` is written. A caller that stops waiting does not take it back."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, written))
        if self._writing is None:
            self._write_pending()
        await written

    def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        writing = asyncio.ensure_future(self._write([item for item, _ in batch]))  # noqa: RUF006 (kept below)
        writing.add_done_callback(functools.partial(self._written, batch))
        self._writing = writing

    def _written(self, batch: list[tuple[T, asyncio.Future[None]]], writing: asyncio.Future[None]) -> None:
        self._writing = None
        error = asyncio.CancelledError() if writing.cancelled() else writing.exception()
        for _, written in batch:
            if written.done():
                continue  # its caller was cancelled; the item is written all the same
            if error is None:
                written.set_result(None)
            else:
                written.set_exception(error)
        if self._pending:
            self._write_pending()
