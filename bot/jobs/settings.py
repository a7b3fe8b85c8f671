"""What the job service needs from the configuration, read once into one frozen value.

The configuration is shaped for the person writing it (per host, per section); the job service
wants a handful of derived numbers (how many edits may run at once across every host, whose
prices an estimate uses, where callbacks arrive). Deriving them here, once, keeps that
arithmetic out of the bot's wiring, and a frozen value cannot drift while the bot runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType

from bot.jobs.leases import process_name
from bot.runtime.config import Settings


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    # The first host's prices: an estimate is made before the router picks a host.
    usd_per_image: Mapping[str, float]
    # Workers, one per edit that may be at a host at once.
    concurrency: int
    max_per_member: int = 3
    max_per_server: int = 20
    poll_interval: float
    poll_interval_max: float
    # Seconds a run may take at its host before it is stopped and failed.
    deadline: float
    # Where hosts announce a finished run ("{host}" is filled in); None polls only.
    callback_url: str | None = None
    # The only hosts an input image is fetched from (Discord's CDN); None fetches from any
    # (tests serving inputs on 127.0.0.1).
    cdn_hosts: tuple[str, ...] | None = None
    retention: timedelta = timedelta(days=30)
    # Edits acknowledged but not yet written as jobs (see `bot.jobs.journal`); None keeps no journal.
    journal_path: Path | None = None
    # This process's claims on jobs (see `bot.jobs.leases`): how long one lasts, and the name
    # it is held under, unique among the processes sharing the database.
    lease_seconds: float = 30.0
    lease_owner: str = field(default_factory=process_name)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobSettings:
        providers = settings.providers
        public_url = settings.web.public_url
        first_host = getattr(providers, providers.order[0])
        return cls(
            usd_per_image=MappingProxyType(dict(first_host.usd_per_image)),
            concurrency=sum(getattr(providers, host).max_concurrency for host in providers.order),
            max_per_member=settings.editing.max_jobs_per_member,
            max_per_server=settings.editing.max_jobs_per_server,
            poll_interval=providers.poll_interval,
            poll_interval_max=providers.poll_interval_max,
            deadline=providers.deadline,
            callback_url=f"{public_url}/callbacks/{{host}}" if public_url else None,
            cdn_hosts=tuple(settings.discord.cdn_hosts),
            retention=timedelta(days=settings.storage.retention_days),
            journal_path=journal_path(settings),
            lease_seconds=settings.jobs.lease_seconds,
        )


def journal_path(settings: Settings) -> Path:
    """Beside the database file, one journal per set of shards: processes of one cluster keep
    their data folder on one volume, and each must replay only the edits it acknowledged itself
    (another live process's would be made twice). A process restarted with the same shards finds
    its journal again."""
    storage = settings.storage.path
    shards = settings.discord.shard_ids
    if shards is None and settings.discord.shard_count is not None:
        shards = list(range(settings.discord.shard_count))
    suffix = "" if shards is None else "-shards-" + "-".join(str(shard) for shard in sorted(shards))
    return storage.with_name(f"{storage.stem}{suffix}.journal")
