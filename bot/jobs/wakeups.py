"""Waking an idle worker at once instead of at its next look at the database.

Two things wake work: a job put in line (`JOBS`: any idle worker may claim it) and a host
saying a run changed (`RUNS`, with the job's id: the worker holding that job polls now). Within
one process an in-memory `LocalWakeups` carries them. Across processes a shared backend carries
them (PostgreSQL's LISTEN/NOTIFY, whose channels and text payloads this protocol mirrors);
without one, a process learns of another's new job when its idle workers next look (`Line`'s
poll) and of a callback that reached another process when the job's holder next polls its run,
within `providers.poll_interval_max`. Nothing is lost either way: a wake-up only brings a look
forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

JOBS = "retouch_jobs"
RUNS = "retouch_runs"

Listener = Callable[[str], None]


class Wakeups(Protocol):
    async def notify(self, channel: str, payload: str = "") -> None:
        """Tell every listener on `channel`, in this process and (where shared) in others."""
        ...

    async def listen(self, channel: str, listener: Listener) -> None:
        """Call `listener` with the payload of every notice on `channel` from now on."""
        ...


class LocalWakeups:
    """Wake-ups within one process."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    async def notify(self, channel: str, payload: str = "") -> None:
        for listener in self._listeners.get(channel, []):
            listener(payload)

    async def listen(self, channel: str, listener: Listener) -> None:
        self._listeners.setdefault(channel, []).append(listener)
