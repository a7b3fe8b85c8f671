"""The intake journal of processes sharing PostgreSQL: one row per acknowledged edit, in the
database itself, so the edit outlives a process whose machine never returns.

Writing it is an autocommit INSERT on a connection no transaction holds
(`PostgresDatabase.execute_apart`): no lock, no wait behind a burst's transactions; and, as a
commit costs about the same whatever it carries, the edits that arrive while one INSERT is on
its way go together in the next (`GroupCommit`). The row is
held under this process's lease name and renewed with its job leases (`Leases.keep_renewing`);
while that goes on no other process touches it, because a live process may still be writing
its job under a busy database. Once the lease lapses (or, on the same machine, its process is
seen gone), any process's takeover claims the row by compare-and-set and writes the job. The
transaction writing a job deletes its row, so when the row's first holder and the process that
took it over both write, the second to get there finds it gone and rolls back (`HandedOn`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from bot.edits import EditOrder
from bot.jobs.group_commit import GroupCommit
from bot.jobs.journal import HandedOn, order_from_dict, order_to_dict, recoverable_since
from bot.jobs.leases import Leases
from storage.intake_journal import IntakeJournalRepository, JournalRow

log = logging.getLogger(__name__)


class TableJournal:
    def __init__(self, rows: IntakeJournalRepository, leases: Leases) -> None:
        self._rows = rows
        self._leases = leases
        self._inserts = GroupCommit(self._insert)
        # The rows this process wrote or took over and whose job it has not written, by token:
        # when such a row is gone as the job is written, another process wrote it. A row here is
        # never taken over by this process's own takeover, which would write the job twice.
        self._held: dict[str, datetime] = {}

    async def add(self, order: EditOrder) -> None:
        token = order.interaction_token
        if token is None:
            return  # nothing could answer it after a crash: recovery skips such orders
        now = self._leases.clock.now()
        self._held[token] = now
        row = JournalRow(token, self._leases.owner, self._leases.until(), json.dumps(order_to_dict(order)))
        try:
            await self._inserts.add(row)
        except BaseException:
            self._held.pop(token, None)
            raise

    async def _insert(self, rows: list[JournalRow]) -> None:
        await self._rows.add(rows, self._leases.clock.now())

    async def withdraw(self, order: EditOrder) -> None:
        token = order.interaction_token
        if token is None:
            return
        self._held.pop(token, None)
        await self._rows.withdraw(token, self._leases.owner)

    async def settle(self, order: EditOrder) -> None:
        token = order.interaction_token
        if token is None or self._held.pop(token, None) is None:
            return  # never journaled here (a confirmed edit's first try, the web, the CLI)
        if not await self._rows.settle(token):
            log.info("an edit this process acknowledged was written by the process that took it over")
            raise HandedOn

    async def recent(self, *, starting: bool) -> list[EditOrder]:
        leases = self._leases
        orders = []
        for row in await self._rows.since(recoverable_since(leases.clock)):
            if row.interaction_token in self._held:
                continue
            if not leases.lapsed(row.owner, row.lease_until, starting=starting):
                continue
            if not await self._rows.take_over(row, leases.owner, leases.until()):
                continue  # renewed, taken by another process, or written meanwhile
            try:
                order = order_from_dict(json.loads(row.edit_order))
            except (ValueError, KeyError, TypeError):
                log.exception("an acknowledged edit in the journal is unreadable; it is dropped")
                await self._rows.withdraw(row.interaction_token, leases.owner)
                continue
            if row.owner != leases.owner:
                log.info("taking over an acknowledged edit from %s, whose lease lapsed", row.owner)
            self._held[row.interaction_token] = leases.clock.now()
            orders.append(order)
        return orders

    async def forget_older(self) -> None:
        cutoff = recoverable_since(self._leases.clock)
        self._held = {token: at for token, at in self._held.items() if at >= cutoff}
        await self._rows.forget_older(cutoff)
