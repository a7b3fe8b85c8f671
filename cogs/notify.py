"""/notify: whether Retouch mentions a member when their edit is done. Always private.

The result is always a new message under the member's request; the mention is what makes
Discord notify them, so it is on unless they turn it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from discord import app_commands
from discord.ext import commands

from cogs import render

if TYPE_CHECKING:
    from cogs.app import Retouch
    from cogs.interactions import Interaction


class Notify(commands.Cog):
    def __init__(self, bot: Retouch) -> None:
        self.bot = bot

    @app_commands.command(name="notify", description="Whether Retouch mentions you when your edit is done")
    @app_commands.describe(mention="on: your results mention you, so Discord notifies you; off: they don't")
    async def notify(self, interaction: Interaction, mention: Literal["on", "off"]) -> None:
        await self.bot.member_prefs.set_mentions(
            interaction.user.id, mention == "on", now=self.bot.clock.now()
        )
        await interaction.response.send_message(render.notify_text(mention == "on"), ephemeral=True)


async def setup(bot: Retouch) -> None:
    await bot.add_cog(Notify(bot))
