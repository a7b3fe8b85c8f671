"""Waking an idle worker at once instead of at its next look at the database.

Two things wake work: a job put in line (`JOBS`: any idle worker may claim it) and a host
saying a run changed or its edit was cancelled (`RUNS`, with the job's id: the process holding
that job polls it now).
A third tells every process that settings changed (`SWITCHES`: with a server's id, that server's,
which each process forgets its copy of; empty, the owner's switches for the whole bot, which each
reads again, `JobService.pause_everywhere`). An
empty payload asks for a look at everything the channel covers (every run this process polls):
it follows an outage of the shared backend, during which notices were lost.

On SQLite, one process, an in-memory `LocalWakeups` carries them. On PostgreSQL every process
sharing the database hears every notice (`storage.notices`, LISTEN/NOTIFY, this process's own
included): a new job put in line anywhere wakes an idle worker in each process, and a callback
that reached any process's web server wakes the holder of its job, wherever it runs. A notice
only brings a look forward, so one lost costs time, never an edit: idle workers still look
every few seconds (`Line`), and a run's holder polls within `providers.poll_interval_max`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from storage.db import Database
from storage.notices import notices_for

JOBS = "retouch_jobs"
RUNS = "retouch_runs"
SWITCHES = "retouch_switches"

Listener = Callable[[str], None]


class Wakeups(Protocol):
    async def notify(self, channel: str, payload: str = "") -> None:
        """Tell every listener on `channel`, in this process and (where shared) in others."""
        ...

    async def listen(self, channel: str, listener: Listener) -> None:
        """Call `listener` with the payload of every notice on `channel` from now on."""
        ...

    async def close(self) -> None:
        """Stop listening (the job service stops)."""
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

    async def close(self) -> None:
        self._listeners.clear()


def wakeups_for(database: Database) -> Wakeups:
    """Shared by every process on the database where it carries notices, else this process's."""
    return notices_for(database) or LocalWakeups()
