"""Per-server settings moderators choose, validated here and audited on every change.

Read on every edit, so they are cached per server and the cache entry dropped on a change, in
every process sharing the database (`GuildSettingsService.forget`, on the notice a change sends).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from bot.pictures.sizes import IMAGE_SIZES
from bot.providers.base import QUALITIES
from bot.runtime.clock import SYSTEM_CLOCK, Clock
from storage.db import Database
from storage.guilds import AuditEntry, GuildRepository
from storage.quotas import QuotaRepository

# Tells every process that a server's settings changed (its id).
Announce = Callable[[int], Awaitable[None]]

NsfwPolicy = Literal["block", "spoiler", "age_restricted"]
NSFW_POLICIES: tuple[str, ...] = get_args(NsfwPolicy)


@dataclass(frozen=True)
class ServerSettings:
    paused: bool = False
    default_quality: str | None = None
    default_size: str | None = None
    default_count: int | None = None
    nsfw_policy: NsfwPolicy = "block"
    allowed_channels: Sequence[int] = field(default_factory=tuple)
    confirm_above: int | None = None
    recipe: bool = True

    def allows_channel(self, channel_id: int | None) -> bool:
        return not self.allowed_channels or channel_id in self.allowed_channels


SETTING_KEYS = tuple(f.name for f in fields(ServerSettings) if f.name != "paused")


_VALIDATORS: dict[str, Callable[[Any], bool]] = {
    "default_quality": lambda value: value in QUALITIES,
    "default_size": lambda value: value in IMAGE_SIZES,
    "default_count": lambda value: isinstance(value, int) and 1 <= value <= 4,
    "nsfw_policy": lambda value: value in NSFW_POLICIES,
    "allowed_channels": lambda value: (
        isinstance(value, list | tuple) and all(isinstance(i, int) for i in value)
    ),
    "confirm_above": lambda value: isinstance(value, int) and value >= 0,
    "recipe": lambda value: isinstance(value, bool),
}


def _check(key: str, value: Any) -> None:
    """Refuse a value the edit flow could not use; messages are for the moderator."""
    if value is None:
        return
    valid = _VALIDATORS.get(key)
    if valid is None:
        raise ValueError(f"unknown server setting {key!r}")
    if not valid(value):
        raise ValueError(f"{value!r} is not a valid {key.replace('_', ' ')}")


class GuildSettingsService:
    """Each server's settings, kept in memory once read. Several processes can serve one server
    (a takeover, the painter's page on any process's web server), so a change is announced
    (`announce`) and every process forgets its copy (`forget`)."""

    def __init__(
        self, db: Database, clock: Clock = SYSTEM_CLOCK, *, announce: Announce | None = None
    ) -> None:
        self._clock = clock
        self._repo = GuildRepository(db)
        self._audit = QuotaRepository(db)
        self._cache: dict[int, ServerSettings] = {}
        self._announce = announce

    def forget(self, guild_id: str) -> None:
        """A server's settings changed somewhere: read them again when next asked ("": every server's)."""
        if guild_id:
            self._cache.pop(int(guild_id), None)
        else:
            self._cache.clear()

    async def _changed(self, guild_id: int) -> None:
        self._cache.pop(guild_id, None)
        if self._announce is not None:
            await self._announce(guild_id)

    async def get(self, guild_id: int | None) -> ServerSettings:
        if guild_id is None:
            return ServerSettings()
        cached = self._cache.get(guild_id)
        if cached is None:
            paused, document = await self._repo.load(guild_id)
            known = {key: document[key] for key in SETTING_KEYS if key in document}
            if "allowed_channels" in known:
                known["allowed_channels"] = tuple(known["allowed_channels"])
            cached = ServerSettings(paused=paused, **known)
            self._cache[guild_id] = cached
        return cached

    async def update(self, guild_id: int, *, actor_id: int, **changes: Any) -> ServerSettings:
        """Apply the changes (None resets a key to the default) and audit them as one entry."""
        for key, value in changes.items():
            _check(key, value)
        now = self._clock.now()
        for key, value in changes.items():
            await self._repo.set_value(guild_id, key, value, actor_id=actor_id, now=now)
        await self._audit.audit(
            guild_id, actor_id=actor_id, action="settings", target_id=None, detail=changes, now=now
        )
        await self._changed(guild_id)
        return await self.get(guild_id)

    async def set_paused(self, guild_id: int, paused: bool, *, actor_id: int) -> None:
        now = self._clock.now()
        await self._repo.set_paused(guild_id, paused, actor_id=actor_id, now=now)
        action = "pause" if paused else "resume"
        await self._audit.audit(
            guild_id, actor_id=actor_id, action=action, target_id=None, detail={}, now=now
        )
        await self._changed(guild_id)

    async def audit(self, guild_id: int, *, limit: int = 15) -> list[AuditEntry]:
        return await self._repo.audit_entries(guild_id, limit=limit)
