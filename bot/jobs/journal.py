"""Edits acknowledged to Discord but not yet written as jobs.

The acknowledgement has to come before any database work (Discord allows 3 seconds and the
database can be busy for longer), so for a moment an edit exists only in memory. This journal
covers that moment: one line per edit, appended and flushed to disk before the acknowledgement,
read back at start so a crash in that moment still runs the edit. It needs no lock shared with
the database, so writing it cannot queue behind a burst.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot.edits import TOKEN_LIFETIME, EditOptions, EditOrder, InputImage, JobKind
from bot.jobs.group_commit import GroupCommit
from bot.runtime.clock import SYSTEM_CLOCK, Clock

# The order's times, written as ISO 8601 text; a line from before one existed lacks it.
_TIMES = ("token_expires_at", "acked_at")
_ORDER_FIELDS = tuple(field.name for field in fields(EditOrder))
_IMAGE_FIELDS = tuple(field.name for field in fields(InputImage))
_OPTION_FIELDS = tuple(field.name for field in fields(EditOptions))


def order_to_dict(order: EditOrder) -> dict[str, Any]:
    """The order as JSON-ready values, keys in field order (the journal's line format).

    Shallow, for JSON written at once: `asdict` deep-copied every value on the way, 1.5 ms of
    the event loop an order in the acknowledgement's profile, before each acknowledgement."""
    data = _shallow(order, _ORDER_FIELDS)
    data["images"] = [_shallow(image, _IMAGE_FIELDS) for image in order.images]
    data["options"] = _shallow(order.options, _OPTION_FIELDS)
    data["mask"] = None if order.mask is None else _shallow(order.mask, _IMAGE_FIELDS)
    for name in _TIMES:
        if data[name] is not None:
            data[name] = data[name].isoformat()
    return data


def _shallow(item: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(item, name) for name in names}


def recoverable_since(clock: Clock) -> datetime:
    """The oldest an acknowledged edit may be and still be answered: its interaction token has a
    minute left."""
    return clock.now() - TOKEN_LIFETIME + timedelta(minutes=1)


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


class HandedOn(Exception):
    """Another process took this journaled edit over (its holder's lease lapsed) and wrote its
    job first: that process runs it and tells the member; this one lets it go."""


class IntakeJournal(Protocol):
    """Where an edit is first recorded, before it is acknowledged.

    `Journal`, a local file, serves the embedded SQLite store, one process per file set. With
    several processes on PostgreSQL, a process whose machine never returns would take its file
    with it, so there the record is a row of the database itself (`TableJournal`), held under
    its process's lease like a job and taken over by another process once that lapses.
    """

    async def add(self, order: EditOrder) -> None: ...

    async def withdraw(self, order: EditOrder) -> None:
        """The edit ended without a job (refused, or waiting for the member's confirmation):
        recovery must not start it."""
        ...

    async def settle(self, order: EditOrder) -> None:
        """Called in the transaction that writes the order's job, so the record ends with it;
        raises HandedOn when another process wrote that job first."""
        ...

    async def recent(self, *, starting: bool) -> list[EditOrder]:
        """Orders acknowledged within a token's lifetime by a process that is gone (this one,
        before its restart, when `starting`), now this process's to write; some may already
        have their job."""
        ...

    async def forget_older(self) -> None:
        """Drop what can no longer be answered (older than a token's lifetime)."""
        ...


class Journal:
    """The file journal, with group commit (an fsync costs milliseconds whatever it carries).

    The writes run on a thread of the journal's own, not in the thread pool that image work
    also fills, one at a time and in order; an entry's `add` returns only once the fsync that
    carried it has returned.
    """

    def __init__(self, path: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self._path = path
        self._clock = clock
        # One thread: writes and rewrites happen in the order they were asked for, never at once.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._lines = GroupCommit(self._append_all)

    async def add(self, order: EditOrder) -> None:
        await self._commit({"at": self._clock.now().isoformat(), "order": order_to_dict(order)})

    async def withdraw(self, order: EditOrder) -> None:
        await self._commit({"at": self._clock.now().isoformat(), "withdrawn": order.interaction_token})

    async def settle(self, order: EditOrder) -> None:
        """Nothing to do: only this process writes this file's jobs, and recovery tells an order
        whose job exists by its token."""

    async def _commit(self, entry: dict[str, Any]) -> None:
        """Return once `entry` is on disk."""
        await self._lines.add((json.dumps(entry) + "\n").encode())

    async def _append_all(self, lines: list[bytes]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._writer, self._append, b"".join(lines))

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

    async def recent(self, *, starting: bool) -> list[EditOrder]:
        """At start, the orders written within an interaction token's lifetime (older ones cannot
        be answered); later, none: the file is this running process's own."""
        if not starting:
            return []
        entries = await asyncio.to_thread(self._recent)
        return [order_from_dict(entry["order"]) for entry in entries]

    def _recent(self) -> list[dict[str, Any]]:
        if not self._path.exists():
            return []
        cutoff = recoverable_since(self._clock)
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
