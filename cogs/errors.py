"""One place that answers a member when anything they started fails, and logs it once.

Slash commands and context menus reach it through the tree's error hook; buttons and submitted
forms through `answering`, since discord.py only logs their failures and the member would see
Discord's bare "This interaction failed". A refusal the core raises on purpose (not yours, no
credits, too many edits) gets its own sentence; anything unexpected gets one short sentence with
a reference that the log line carries too, so the owner can find it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.credits import CreditError
from bot.edits import EditsPaused, TooManyJobs
from bot.jobs.access import AccessError
from cogs.interactions import answer_privately

if TYPE_CHECKING:
    from cogs.app import Retouch
    from cogs.interactions import Interaction

log = logging.getLogger(__name__)

SORRY = (
    "Something went wrong on the bot's side (reference {ref}); "
    "try again, and tell the server owner if it keeps happening."
)


def member_text(error: BaseException) -> str | None:
    """The sentence for a refusal the core raised on purpose; None for anything unexpected."""
    if isinstance(error, (AccessError, CreditError, TooManyJobs, EditsPaused)):
        return error.message
    return None


async def report(interaction: Interaction, error: BaseException, what: str) -> None:
    """Tell the member privately what went wrong with `what`, and log the unexpected once."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    text = member_text(error)
    if text is None:
        ref = secrets.token_hex(4)
        text = SORRY.format(ref=ref)
        log.error(
            "%s failed for user %s in guild %s (reference %s)",
            what,
            interaction.user.id,
            interaction.guild_id,
            ref,
            exc_info=error,
        )
    try:
        await answer_privately(interaction, text)
    except discord.HTTPException:
        log.info("could not tell the member about the failure of %s", what)


@asynccontextmanager
async def answering(interaction: Interaction, what: str) -> AsyncIterator[None]:
    """Run a button's or a form's work; whatever it raises is answered by `report`."""
    try:
        yield
    except Exception as error:
        await report(interaction, error, what)


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
        await report(interaction, error, f"command /{command}")


async def setup(bot: Retouch) -> None:
    await bot.add_cog(Errors(bot))
