"""The discord.py Bot: it owns the process's resources and wires services to cogs.

It is the Discord side's entry point, so it lives with the cogs: it builds the Discord delivery
and hands it to the Discord-free job runner, and `bot/` never imports Discord or the cogs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from functools import partial
from typing import Any

import aiohttp
import discord
import yarl
from discord.ext import commands

from bot.credits import CreditService
from bot.jobs import JobService, JobSettings
from bot.jobs.admission import Admission, AdmissionRules
from bot.pictures import memory
from bot.pictures.files import FileStore
from bot.pictures.links import FileLinks, derive_key
from bot.providers.router import Router, build_router
from bot.runtime import heap
from bot.runtime.clock import SYSTEM_CLOCK, Clock
from bot.runtime.command_sync import CommandSync
from bot.runtime.config import Settings
from bot.runtime.guilds import GuildSettingsService
from bot.runtime.metrics import Metrics
from bot.runtime.tasks import Supervisor
from bot.web.painter import Painter
from bot.web.server import Callbacks, Exposition, Health, Served, WebServer, build_app, callback_hosts
from cogs.delivery import DiscordDelivery
from cogs.paint import DiscordDesk
from storage.commands import CommandSyncRepository
from storage.db import Database
from storage.host_slots import HostSlotRepository
from storage.jobs import JobRepository
from storage.members import MemberPrefs
from storage.paint_links import PaintLinkRepository
from storage.store import open_db

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.errors", "cogs.edit", "cogs.credits", "cogs.quota", "cogs.admin", "cogs.notify")


def route_discord(settings: Settings) -> None:
    """Point discord.py at a proxy or a test fake; both attributes are process-wide."""
    if settings.discord.api_base:
        discord.http.Route.BASE = settings.discord.api_base
    if settings.discord.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord.gateway_url)


# Retouch never joins voice; without this discord.py warns at every start that voice is off.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


class Retouch(commands.Bot):
    session: aiohttp.ClientSession
    db: Database
    jobs: JobService
    delivery: DiscordDelivery
    web: WebServer
    router: Router
    credits: CreditService
    metrics: Metrics
    guild_settings: GuildSettingsService
    painter: Painter | None = None
    member_prefs: MemberPrefs
    admission: Admission

    def __init__(
        self,
        settings: Settings,
        *,
        guild_ready_timeout: float = 2.0,
        sync_commands: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        # Slash commands and components arrive without any privileged intent; `guilds` keeps
        # channel and role caches for permission checks.
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=guild_ready_timeout,
            **self._shard_options(settings),
        )
        self.settings = settings
        self._force_sync = sync_commands
        # The one clock every service is handed (`bot.runtime.clock`).
        self.clock = clock
        self.started_at = clock.now()
        self._shutdown: asyncio.Task[None] | None = None
        route_discord(settings)

    @staticmethod
    def _shard_options(settings: Settings) -> dict[str, Any]:
        """One gateway connection: none; `ShardedRetouch` names its shards."""
        return {}

    async def setup_hook(self) -> None:
        settings = self.settings
        memory.configure(settings.editing.image_memory_mb * memory.MB)
        self.session = aiohttp.ClientSession()
        self.db = await open_db(settings.storage.store)
        # Each host's `max_concurrency` is counted in the database, across every process on it.
        self.router = build_router(
            settings.providers, self.session, HostSlotRepository(self.db, now=self.clock.now)
        )
        self.credits = CreditService(self.db, settings.credits, settings.budget, clock=self.clock.now)
        self.guild_settings = GuildSettingsService(
            self.db, self.clock, announce=lambda guild_id: self.jobs.settings_changed(guild_id)
        )
        self.member_prefs = MemberPrefs(self.db)
        self.metrics = Metrics()
        repo = JobRepository(self.db, now=self.clock.now)
        files = FileStore(
            settings.storage.files_dir,
            max_bytes=int(settings.storage.max_gib * 1024**3),
            in_use=repo.in_use,
        )
        token = settings.discord.token.get_secret_value()
        links = FileLinks.for_bot(settings.web.public_url, token) if settings.web.public_url else None
        self.jobs = JobService(
            JobSettings.from_settings(settings),
            repo=repo,
            provider=self.router,
            credits=self.credits,
            files=files,
            session=self.session,
            metrics=self.metrics,
            links=links,
            clock=self.clock,
        )
        self.jobs.on_settings_changed(self.guild_settings.forget)
        rules = AdmissionRules.from_settings(settings)
        self.admission = Admission(self.jobs, self.guild_settings, self.member_prefs, rules)
        if settings.web.public_url:
            self.painter = Painter(
                public_url=settings.web.public_url,
                key=derive_key(token, "painter links"),
                repo=PaintLinkRepository(self.db),
                jobs=self.jobs,
                credits=self.credits,
                files=files,
                session=self.session,
                cdn_hosts=settings.discord.cdn_hosts,
                clock=self.clock.now,
            )
            self.painter.desk = DiscordDesk(self)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self._sync_commands()
        self.web = WebServer(
            build_app(
                Health(
                    self.db,
                    gateway_ready=self.is_ready,
                    accepting=lambda: self.jobs.accepting and not self.jobs.paused,
                ),
                Callbacks(callback_hosts(settings.providers), self.jobs.run_update),
                Exposition(self.metrics, repo),
                Served(links, files) if links is not None else None,
                self.painter,
                limits=settings.web,
            ),
            settings.web,
        )
        await self.web.start()
        self.delivery = DiscordDelivery(self)
        await self.jobs.start(self.delivery, self.admission.readmit)
        heap.keep_startup()

    async def _sync_commands(self) -> None:
        """Sync the commands to the dev guilds, or globally, where they changed since the last sync."""
        syncs = CommandSync(CommandSyncRepository(self.db), force=self._force_sync, now=self.clock.now)
        scopes: list[discord.Object | None] = [
            discord.Object(id=guild_id) for guild_id in self.settings.discord.dev_guilds
        ] or [None]
        for guild in scopes:
            if guild is not None:
                self.tree.copy_global_to(guild=guild)
            where = "globally" if guild is None else f"to guild {guild.id}"
            scope = f"{self.application_id}:{'global' if guild is None else guild.id}"
            definitions = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
            if await syncs.sync_if_changed(scope, definitions, partial(self.tree.sync, guild=guild)):
                log.info("synced %d commands %s", len(definitions), where)
            else:
                log.info("commands unchanged since the last sync %s; not synced", where)

    async def close(self) -> None:
        """Shut down once, however many callers ask (a signal, the end of `start`, a test).

        Every caller waits for the whole sequence, so the process never exits while the
        database is still closing.
        """
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._close_all())
        await asyncio.shield(self._shutdown)

    async def _close_all(self) -> None:
        """Stop taking edits first, then let go of Discord, HTTP and the database in that order."""
        log.info("shutting down")
        if hasattr(self, "jobs"):
            await self.jobs.stop()
        if hasattr(self, "delivery"):
            await self.delivery.stop()
        if hasattr(self, "web"):
            await self.web.stop()
        await super().close()
        if hasattr(self, "session"):
            await self.session.close()
        if hasattr(self, "db"):
            await self.db.close()


class ShardedRetouch(Retouch, commands.AutoShardedBot):
    """Retouch over the gateway shards `discord.shard_ids` of `discord.shard_count` (all of them
    when no ids are given), each its own connection in this process. discord.py takes the count as
    given and connects to `DiscordWebSocket.DEFAULT_GATEWAY` without asking Discord for one; REST,
    webhooks and interaction answers are the same as unsharded."""

    @staticmethod
    def _shard_options(settings: Settings) -> dict[str, Any]:
        return {"shard_count": settings.discord.shard_count, "shard_ids": settings.discord.shard_ids}


def build_bot(
    settings: Settings,
    *,
    guild_ready_timeout: float = 2.0,
    sync_commands: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> Retouch:
    """The bot the settings ask for: sharded when `discord.shard_count` is set, else as always,
    on one gateway connection."""
    kind = ShardedRetouch if settings.discord.shard_count is not None else Retouch
    return kind(settings, guild_ready_timeout=guild_ready_timeout, sync_commands=sync_commands, clock=clock)


class CannotStart(Exception):
    """Discord or the network refused the start in a way the owner can fix; the text says how."""


async def serve(settings: Settings, *, sync_commands: bool = False) -> None:
    """Run the bot until a signal or Discord ends it, closing everything on the way out;
    `sync_commands` syncs the slash commands even when they have not changed."""
    bot = build_bot(settings, sync_commands=sync_commands)
    loop = asyncio.get_running_loop()
    signalled = Supervisor()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, lambda: signalled.spawn(bot.close(), name="close-on-signal"))
    try:
        await bot.start(settings.discord.token.get_secret_value())
    except discord.LoginFailure:
        raise CannotStart(
            "Discord rejected discord.token: check the bot token in the Developer Portal (Bot → Reset Token)."
        ) from None
    except discord.PrivilegedIntentsRequired:
        raise CannotStart(
            "Discord refused the gateway intents; Retouch needs none privileged, so check the application."
        ) from None
    except (aiohttp.ClientConnectionError, OSError) as exc:
        where = settings.discord.api_base or "discord.com"
        raise CannotStart(
            f"Cannot reach Discord at {where} ({exc.__class__.__name__}); check the network or proxy."
        ) from None
    finally:
        await bot.close()
        await signalled.stop()
