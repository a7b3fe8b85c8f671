"""Edits acknowledged to Discord but not yet written as jobs.

The acknowledgement has to come before any database work (Discord allows 3 seconds and the
database can be busy for longer), so for a moment an edit exists only in memory. This journal
covers that moment: one line per edit, appended and flushed to disk before the acknowledgement,
read back at start so a crash in that moment still runs the edit. It needs no lock shared with
the database, so writing it cannot queue behind a burst.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot.edits import TOKEN_LIFETIME, EditOptions, EditOrder, InputImage, JobKind
from bot.runtime.clock import SYSTEM_CLOCK, Clock

# The order's times, written as ISO 8601 text; a line from before one existed lacks it.
_TIMES = ("token_expires_at", "acked_at")


def order_to_dict(order: EditOrder) -> dict[str, Any]:
    data = asdict(order)
    for name in _TIMES:
        if data[name] is not None:
            data[name] = data[name].isoformat()
    return data


def order_from_dict(data: Mapping[str, Any]) -> EditOrder:
    fields = dict(data)
    for name in _TIMES:
        if fields.get(name) is not None:
            fields[name] = datetime.fromisoformat(fields[name])
    fields["images"] = [InputImage(**item) for item in fields["images"]]
    fields["mask"] = InputImage(**fields["mask"]) if fields.get("mask") else None
    fields["options"] = EditOptions.from_dict(fields["options"])
    fields["kind"] = JobKind(fields.get("kind", JobKind.EDIT))
    fields["role_ids"] = tuple(fields.get("role_ids", ()))
    return EditOrder(**fields)


class IntakeJournal(Protocol):
    """Where an edit is first recorded, before it is acknowledged.

    `Journal` (a local file) serves the embedded SQLite store. With several processes on
    PostgreSQL, a process whose machine never returns would take its file with it, so there the
    record belongs in the database itself, cheaply: one autocommit INSERT into an
    `intake_journal` table (the order's token, the process's lease name, the time, the order as
    JSON), outside any transaction and its locks. `withdraw` deletes the row; `recent` reads the
    rows within a token's lifetime that have no job yet and whose process is gone (a
    `processes` row that its lease renewal keeps fresh has lapsed: a live process may still be
    creating the job, under a busy database), and `forget_older` deletes the rest. Not built
    yet: it arrives with the PostgreSQL backend.
    """

    async def add(self, order: EditOrder) -> None: ...

    async def withdraw(self, order: EditOrder) -> None: ...

    async def recent(self) -> list[EditOrder]: ...

    async def forget_older(self) -> None: ...


class Journal:
    """The file journal, with group commit.

    An fsync costs milliseconds whatever it carries, and a burst of 200 `/edit`s each waiting
    for its own, in the thread pool that image work also fills, kept members waiting for
    hundreds of milliseconds. So every entry that arrives while one write is on its way to disk
    goes to disk with the next one, together: an entry waits for at most the fsync in flight
    plus its own. The writes run on a thread of the journal's own, one at a time and in order,
    and an entry's `add` returns only once the fsync that carried it has returned.
    """

    def __init__(self, path: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self._path = path
        self._clock = clock
        # One thread: writes and rewrites happen in the order they were asked for, never at once.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writing = False

    async def add(self, order: EditOrder) -> None:
        await self._commit({"at": self._clock.now().isoformat(), "order": order_to_dict(order)})

    async def withdraw(self, order: EditOrder) -> None:
        """The edit ended without a job (refused, or waiting for the member's confirmation):
        recovery must not start it."""
        await self._commit({"at": self._clock.now().isoformat(), "withdrawn": order.interaction_token})

    async def _commit(self, entry: dict[str, Any]) -> None:
        """Return once `entry` is on disk. A caller that stops waiting does not take it back."""
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()
        self._pending.append(((json.dumps(entry) + "\n").encode(), durable))
        if not self._writing:
            self._write_pending(loop)
        await durable

    def _write_pending(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        self._writing = True
        written = loop.run_in_executor(self._writer, self._append, b"".join(line for line, _ in batch))
        written.add_done_callback(functools.partial(self._written, loop, batch))

    def _written(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[bytes, asyncio.Future[None]]],
        written: asyncio.Future[None],
    ) -> None:
        self._writing = False
        error = asyncio.CancelledError() if written.cancelled() else written.exception()
        for _, durable in batch:
            if durable.done():
                continue  # its caller was cancelled; the entry is written all the same
            if error is None:
                durable.set_result(None)
            else:
                durable.set_exception(error)
        if self._pending:
            self._write_pending(loop)

    def _append(self, lines: bytes) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A crash tore the last line: end it, or the next entry would join it unreadable.
                lines = b"\n" + lines
            written = 0
            while written < len(lines):
                written += os.write(fd, lines[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if not size:  # a new file: its name is on disk only once its folder is
            _fsync_folder(self._path.parent)

    async def recent(self) -> list[EditOrder]:
        """Orders written within an interaction token's lifetime; older ones cannot be answered."""
        entries = await asyncio.to_thread(self._recent)
        return [order_from_dict(entry["order"]) for entry in entries]

    def _recent(self) -> list[dict[str, Any]]:
        if not self._path.exists():
            return []
        cutoff = self._clock.now() - TOKEN_LIFETIME + timedelta(minutes=1)
        entries = []
        for line in self._path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                if datetime.fromisoformat(entry["at"]) >= cutoff:
                    if "order" in entry:
                        order_from_dict(entry["order"])  # readable, or skipped below
                    entries.append(entry)
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by the crash itself: its edit was never acknowledged
        withdrawn = {entry["withdrawn"] for entry in entries if "withdrawn" in entry}
        return [
            entry
            for entry in entries
            if "order" in entry and entry["order"]["interaction_token"] not in withdrawn
        ]

    async def forget_older(self) -> None:
        """Keep only what could still be recovered; run at start and from time to time.

        On the writer's thread, so no entry is appended to the file that is being replaced."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self._rewrite)

    def _rewrite(self) -> None:
        if not self._path.exists():
            return
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(entry) + "\n" for entry in self._recent()), encoding="utf-8")
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        temporary.replace(self._path)
        _fsync_folder(self._path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
