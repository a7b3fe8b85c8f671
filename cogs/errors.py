"""One place that answers a member when a command fails unexpectedly, and logs it once.

Without it, an exception inside a command leaves Discord showing "The application did not
respond", which tells the member nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

if TYPE_CHECKING:
    from bot.app import Retouch

    Interaction = discord.Interaction[Retouch]

log = logging.getLogger(__name__)

SORRY = "Something went wrong on the bot's side; try again, and tell the server owner if it keeps happening."


class Errors(commands.Cog):
    def __init__(self, bot: Retouch) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error
        bot.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]

    async def cog_unload(self) -> None:
        self.bot.tree.on_error = self._previous  # type: ignore[method-assign]

    async def on_app_command_error(
        self, interaction: Interaction, error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, app_commands.CheckFailure):
            return  # the check already answered
        command = interaction.command.qualified_name if interaction.command else "?"
        log.error(
            "command /%s failed for user %s in guild %s",
            command,
            interaction.user.id,
            interaction.guild_id,
            exc_info=error,
        )
        try:
            if interaction.response.is_done():
                await interaction.followup.send(SORRY, ephemeral=True)
            else:
                await interaction.response.send_message(SORRY, ephemeral=True)
        except discord.HTTPException:
            log.info("could not tell the member about the failure of /%s", command)


async def setup(bot: Retouch) -> None:
    await bot.add_cog(Errors(bot))
