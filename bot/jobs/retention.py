"""What is kept of finished edits, and for how long: their files go after the retention period,
and sooner, oldest first, when the store is over its size cap; the journal forgets edits older
than an interaction token's lifetime. Both run at start and then every few hours."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bot.jobs.core import Core

log = logging.getLogger(__name__)

PRUNE_EVERY = timedelta(hours=6)


class Retention:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def prune_files(self) -> int:
        """Delete finished edits' files past retention, oldest first above the size cap."""
        older_than = self._core.clock.now() - self._core.settings.retention
        removed = await self._core.files.prune(older_than=older_than.timestamp())
        if removed:
            log.info("pruned the files of %d old edits", removed)
        return removed

    async def keep_pruning(self) -> None:
        while True:
            if self._core.journal is not None:
                await self._core.journal.forget_older()
            await self.prune_files()
            await asyncio.sleep(PRUNE_EVERY.total_seconds())
