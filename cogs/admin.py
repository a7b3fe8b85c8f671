"""/retouch: health, pause, server settings, the owner's budget and the audit trail.

Server admins (Manage Server) act on and see their own server only: its queue and its spend.
The application owner sees the whole bot and can pause it everywhere. Both are checked here, not
only by Discord's defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import __version__
from bot.pictures.sizes import IMAGE_SIZES
from bot.runtime.guilds import NsfwPolicy
from cogs import render
from cogs.interactions import can_moderate

if TYPE_CHECKING:
    from cogs.app import Retouch
    from cogs.interactions import Interaction

NOT_ALLOWED = "Only server admins (Manage Server) and the bot's owner can use /retouch."
OWNER_ONLY = "Only the bot's owner can pause it on every server."
Quality = Literal["low", "medium", "high"]
SIZE_CHOICES = [app_commands.Choice(name=size, value=size) for size in IMAGE_SIZES]


@app_commands.default_permissions(manage_guild=True)
class Admin(commands.GroupCog, group_name="retouch", group_description="Run and configure Retouch"):
    def __init__(self, bot: Retouch) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: Interaction) -> bool:  # type: ignore[override]
        if can_moderate(interaction) or await self.bot.is_owner(interaction.user):
            return True
        await interaction.response.send_message(NOT_ALLOWED, ephemeral=True)
        return False

    async def _say(self, interaction: Interaction, text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=render.NO_PINGS)

    async def _scope(self, interaction: Interaction) -> int | None:
        """The server whose queue and spend this member may see; None (every server) for the owner."""
        if await self.bot.is_owner(interaction.user):
            return None
        assert interaction.guild_id is not None  # interaction_check: an admin is in a server
        return interaction.guild_id

    @app_commands.command(name="status", description="Health, queue, hosts and today's spend")
    async def status(self, interaction: Interaction) -> None:
        jobs = self.bot.jobs
        scope = await self._scope(interaction)
        server = await self.bot.guild_settings.get(interaction.guild_id)
        queued, in_flight = await jobs.load(scope)
        snapshot = render.StatusSnapshot(
            version=__version__,
            started_at=self.bot.started_at,
            latency=self.bot.latency,
            queued=queued,
            in_flight=in_flight,
            hosts=self.bot.router.health(),
            spend=await self.bot.credits.spend(scope),
            paused_here=server.paused,
            paused_everywhere=jobs.paused,
        )
        await self._say(interaction, render.status_text(snapshot))

    @app_commands.command(name="pause", description="Stop taking new edits (running ones still finish)")
    @app_commands.describe(everywhere="Pause on every server (bot owner only)")
    async def pause(self, interaction: Interaction, everywhere: bool = False) -> None:
        await self._switch(interaction, paused=True, everywhere=everywhere)

    @app_commands.command(name="resume", description="Take new edits again")
    @app_commands.describe(everywhere="Resume on every server (bot owner only)")
    async def resume(self, interaction: Interaction, everywhere: bool = False) -> None:
        await self._switch(interaction, paused=False, everywhere=everywhere)

    async def _switch(self, interaction: Interaction, *, paused: bool, everywhere: bool) -> None:
        word = "paused" if paused else "resumed"
        if everywhere:
            if not await self.bot.is_owner(interaction.user):
                await self._say(interaction, OWNER_ONLY)
                return
            await self.bot.jobs.pause_everywhere(paused, actor_id=interaction.user.id)
            await self._say(interaction, f"Editing is {word} on every server.")
            return
        if interaction.guild_id is None:
            await self._say(interaction, "Use this in a server, or pass everywhere:True.")
            return
        await self.bot.guild_settings.set_paused(interaction.guild_id, paused, actor_id=interaction.user.id)
        await self._say(interaction, f"Editing is {word} on this server.")

    @app_commands.command(name="settings", description="This server's edit defaults and rules")
    @app_commands.describe(
        quality="Quality when a member does not choose",
        size="Result shape when a member does not choose",
        count="Versions per edit when a member does not choose",
        nsfw="What to do with results the host flags as NSFW",
        channel="Allow editing in this channel (adds it to the allowed list)",
        any_channel="Allow editing in every channel again (clears the list)",
        confirm_above="Ask members to confirm edits costing more than this many credits",
        recipe="Write each result's prompt and settings into the file's own metadata (default on)",
    )
    @app_commands.choices(size=SIZE_CHOICES)
    @app_commands.guild_only()
    async def settings(
        self,
        interaction: Interaction,
        quality: Quality | None = None,
        size: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        nsfw: NsfwPolicy | None = None,
        channel: discord.TextChannel | None = None,
        any_channel: bool = False,
        confirm_above: app_commands.Range[int, 0, 1_000_000] | None = None,
        recipe: bool | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        current = await self.bot.guild_settings.get(interaction.guild_id)
        changes: dict[str, object] = {
            key: value
            for key, value in {
                "default_quality": quality,
                "default_size": size.value if size is not None else None,
                "default_count": count,
                "nsfw_policy": nsfw,
                "confirm_above": confirm_above,
                "recipe": recipe,
            }.items()
            if value is not None
        }
        if any_channel:
            changes["allowed_channels"] = None
        elif channel is not None:
            changes["allowed_channels"] = sorted({*current.allowed_channels, channel.id})
        if changes:
            current = await self.bot.guild_settings.update(
                interaction.guild_id, actor_id=interaction.user.id, **changes
            )
        prefix = "Saved. " if changes else ""
        await self._say(interaction, prefix + render.server_settings_text(current))

    @app_commands.command(
        name="budget", description="What the hosts cost today and this month, against the caps"
    )
    async def budget(self, interaction: Interaction) -> None:
        scope = await self._scope(interaction)
        await self._say(interaction, render.spend_text(await self.bot.credits.spend(scope)))

    @app_commands.command(name="audit", description="Recent moderator and owner actions on this server")
    @app_commands.guild_only()
    async def audit(self, interaction: Interaction) -> None:
        assert interaction.guild_id is not None
        entries = await self.bot.guild_settings.audit(interaction.guild_id)
        await self._say(interaction, render.audit_text(entries))


async def setup(bot: Retouch) -> None:
    await bot.add_cog(Admin(bot))
