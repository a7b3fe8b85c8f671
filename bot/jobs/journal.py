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
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot.edits import TOKEN_LIFETIME, EditOptions, EditOrder, InputImage, JobKind
from bot.runtime.clock import SYSTEM_CLOCK, Clock


def order_to_dict(order: EditOrder) -> dict[str, Any]:
    return asdict(order)


def order_from_dict(data: Mapping[str, Any]) -> EditOrder:
    fields = dict(data)
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
    def __init__(self, path: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self._path = path
        self._clock = clock

    async def add(self, order: EditOrder) -> None:
        line = json.dumps({"at": self._clock.now().isoformat(), "order": order_to_dict(order)}) + "\n"
        await asyncio.to_thread(self._append, line)

    async def withdraw(self, order: EditOrder) -> None:
        """The edit ended without a job (refused, or waiting for the member's confirmation):
        recovery must not start it."""
        line = json.dumps({"at": self._clock.now().isoformat(), "withdrawn": order.interaction_token}) + "\n"
        await asyncio.to_thread(self._append, line)

    def _append(self, line: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

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
        """Keep only what could still be recovered; run at start and from time to time."""
        await asyncio.to_thread(self._rewrite)

    def _rewrite(self) -> None:
        if not self._path.exists():
            return
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(entry) + "\n" for entry in self._recent()), encoding="utf-8")
        temporary.replace(self._path)
