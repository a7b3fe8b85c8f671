"""The shared fakes with the two things crash tests need and the originals lack.

1. Holds on Discord requests. A crash "during the upload to Discord" needs the bot parked
   inside that request: `ReliableDiscord.hold_next` parks the next matching request either
   before Discord acts on it (the upload never landed) or after (it landed, but the bot never
   hears back). A hold is never released on its own, so a killed bot's request stays parked;
   closing the fake wakes every hold so teardown never waits on aiohttp's 60 s grace period.
   `ReliableRunflow.hold_file` likewise parks the n-th output download at the host.
2. Hooks that run at an exact point of a fake's work, for instance "the moment Discord
   has stored the result" or "the moment Runflow answers a poll with a finished run". The
   crash tests use them to take the bot's SQLite write lock (see `store.DbFreeze`), which
   freezes the bot at its very next write, so a kill lands between two of its writes.

Both fakes also count the faults that actually fired, for the reliability report.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.fakes.discord import DiscordError, FakeDiscord, _Fault, _Request
from tests.fakes.runflow import FakeRunflow

__all__ = ["DiscordHold", "FileHold", "ReliableDiscord", "ReliableRunflow", "has_files", "says"]

RequestPredicate = Callable[[_Request], bool]


def has_files(request: _Request) -> bool:
    """The request uploads at least one file (the bot posting a result)."""
    return bool(request.files)


def says(text: str) -> RequestPredicate:
    """The request's message content contains `text` (e.g. "❌" for a failure notice)."""
    return lambda request: text in str(request.payload.get("content") or "")


@dataclass
class DiscordHold:
    """One parked request: `arrived` is set when a request is parked, `release()` lets it go."""

    method: str
    pattern: re.Pattern[str]
    when: Literal["before", "after"]
    predicate: RequestPredicate | None
    remaining: int = 1
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    parked: int = 0

    def matches(self, when: str, request: _Request) -> bool:
        return (
            self.remaining > 0
            and self.when == when
            and self.method in ("*", request.method)
            and self.pattern.search(request.path) is not None
            and (self.predicate is None or self.predicate(request))
        )

    def release(self) -> None:
        self.released.set()


@dataclass
class _Hook:
    method: str
    pattern: re.Pattern[str]
    predicate: RequestPredicate | None
    action: Callable[[_Request], None]
    remaining: int = 1


class ReliableDiscord(FakeDiscord):
    """FakeDiscord plus request holds, after-handling hooks and a count of fired faults."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.holds: list[DiscordHold] = []
        self._hooks: list[_Hook] = []
        self._closing = False
        self.faults_fired = 0

    def hold_next(
        self,
        method: str,
        path_regex: str,
        *,
        when: Literal["before", "after"] = "before",
        predicate: RequestPredicate | None = None,
        times: int = 1,
    ) -> DiscordHold:
        """Park the next `times` matching requests: `before` Discord acts on them, or `after`
        it has (and before the bot gets the answer)."""
        hold = DiscordHold(method.upper(), re.compile(path_regex), when, predicate, times)
        self.holds.append(hold)
        return hold

    def clear_holds(self) -> None:
        """Stop parking new requests (parked ones stay parked until released or closed)."""
        for hold in self.holds:
            hold.remaining = 0

    def after_handled(
        self,
        method: str,
        path_regex: str,
        action: Callable[[_Request], None],
        *,
        predicate: RequestPredicate | None = None,
        times: int = 1,
    ) -> None:
        """Run `action` right after Discord has acted on a matching request, before the bot
        can read the answer; it runs synchronously, so nothing else happens in between."""
        self._hooks.append(_Hook(method.upper(), re.compile(path_regex), predicate, action, times))

    def changed(self) -> asyncio.Event:
        """Set at the fake's next change of any kind (request, message, gateway frame)."""
        return self._tick

    def faults_armed(self) -> int:
        return self.faults_fired + sum(fault.remaining for fault in self._faults)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        fault = super()._take_fault(method, path)
        if fault is not None:
            self.faults_fired += 1
        return fault

    async def _park(self, when: str, request: _Request) -> None:
        hold = next((hold for hold in self.holds if hold.matches(when, request)), None)
        if hold is None:
            return
        hold.remaining -= 1
        hold.parked += 1
        hold.arrived.set()
        self._bump()
        await hold.released.wait()
        if self._closing:
            raise DiscordError(503, 0, "fake discord: closing")

    async def _route(self, request: _Request) -> web.Response:
        await self._park("before", request)
        response = await super()._route(request)
        for hook in self._hooks:
            if (
                hook.remaining > 0
                and hook.method in ("*", request.method)
                and hook.pattern.search(request.path)
                and (hook.predicate is None or hook.predicate(request))
            ):
                hook.remaining -= 1
                hook.action(request)
        await self._park("after", request)
        return response

    async def close(self) -> None:
        self._closing = True
        for hold in self.holds:
            hold.release()
        await super().close()


@dataclass
class FileHold:
    """Park the `ordinal`-th output download (1-based) from when it was armed."""

    ordinal: int
    seen: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)


class ReliableRunflow(FakeRunflow):
    """FakeRunflow plus a hook on polls that report a finished run, holds on the n-th output
    download, and a count of fired faults."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.file_holds: list[FileHold] = []
        self._on_finished_poll: list[Callable[[str], None]] = []
        self._armed = 0

    def changed(self) -> asyncio.Event:
        return self._changed

    def on_finished_poll(self, action: Callable[[str], None]) -> None:
        """Run `action(run_id)` once, synchronously, when a poll is answered with a finished run."""
        self._on_finished_poll.append(action)

    def hold_file(self, ordinal: int = 1) -> FileHold:
        hold = FileHold(ordinal)
        self.file_holds.append(hold)
        return hold

    def faults_fired(self) -> int:
        return self._armed - sum(fault.times for fault in self._faults)

    def _add_fault(self, method: str, path_regex: str, kind: Any, times: int, **kwargs: Any) -> None:
        super()._add_fault(method, path_regex, kind, times, **kwargs)
        self._armed += times

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/files/"):
            for hold in self.file_holds:
                hold.seen += 1
                if hold.seen == hold.ordinal:
                    hold.arrived.set()
                    self._notify()
                    closing = asyncio.ensure_future(self._closing.wait())
                    released = asyncio.ensure_future(hold.released.wait())
                    await asyncio.wait({closing, released}, return_when=asyncio.FIRST_COMPLETED)
                    for waiter in (closing, released):
                        waiter.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await waiter
        return await super()._handle(request)

    def _route(self, request: web.Request, raw: bytes) -> web.Response:
        response = super()._route(request, raw)
        found = re.fullmatch(r"/v1/runs/([^/]+)", request.path)
        if request.method == "GET" and found and response.status == 200 and self._on_finished_poll:
            run = self.runs.get(found.group(1))
            if run is not None and run.terminal:
                actions, self._on_finished_poll = self._on_finished_poll, []
                for action in actions:
                    action(run.id)
        return response

    async def close(self) -> None:
        for hold in self.file_holds:
            hold.released.set()
        await super().close()
