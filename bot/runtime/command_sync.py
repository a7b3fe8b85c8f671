"""Syncing slash commands only when their definitions changed, once across every process.

Discord limits how many commands an application may create a day, and a bulk overwrite on every
start spends that allowance (and a request) for nothing. The definitions are hashed as they would
be sent; a scope whose hash matches the last sync is left alone. When several processes start at
once over one store, the first to record the new hash (a compare-and-set in the store) is the one
that syncs; if its sync fails the record is withdrawn, so the next start tries again. `python -m
bot run --sync-commands` forces a sync, for when commands were changed or deleted by hand in
Discord.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from bot.runtime.clock import SYSTEM_CLOCK
from storage.commands import CommandSyncRepository


def digest(definitions: Sequence[dict[str, Any]]) -> str:
    """The same for the same definitions, whatever the order of keys or commands."""
    ordered = sorted(definitions, key=lambda command: (command.get("type", 1), command.get("name", "")))
    return hashlib.sha256(json.dumps(ordered, sort_keys=True, default=str).encode()).hexdigest()


class CommandSync:
    def __init__(
        self,
        repo: CommandSyncRepository,
        *,
        force: bool = False,
        now: Callable[[], datetime] = SYSTEM_CLOCK.now,
    ) -> None:
        self._repo = repo
        self._force = force
        self._now = now

    async def sync_if_changed(
        self, scope: str, definitions: Sequence[dict[str, Any]], sync: Callable[[], Awaitable[object]]
    ) -> bool:
        """Run `sync` when this process won the claim on these definitions (or is forced); False
        when another process, or an earlier start, already synced them."""
        wanted = digest(definitions)
        if self._force:
            await self._repo.record(scope, wanted, now=self._now())
        elif not await self._repo.claim(scope, wanted, now=self._now()):
            return False
        try:
            await sync()
        except BaseException:
            await self._repo.release(scope, wanted)
            raise
        return True
