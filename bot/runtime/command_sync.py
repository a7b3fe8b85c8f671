"""Syncing slash commands only when their definitions changed.

Discord limits how many commands an application may create a day, and a bulk overwrite on every
start spends that allowance (and a request) for nothing. The definitions are hashed as they would
be sent; a scope whose hash matches the last successful sync is left alone. `python -m bot run
--sync-commands` forces a sync, for when commands were changed or deleted by hand in Discord.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
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

    async def needed(self, scope: str, definitions: Sequence[dict[str, Any]]) -> bool:
        return self._force or await self._repo.digest(scope) != digest(definitions)

    async def synced(self, scope: str, definitions: Sequence[dict[str, Any]]) -> None:
        """Record a successful sync, so the next start with the same definitions skips it."""
        await self._repo.record(scope, digest(definitions), now=self._now())
