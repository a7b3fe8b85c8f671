"""/credits: what a member has, where it went, and what edits cost. Always private."""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord import app_commands
from discord.ext import commands

from bot.credits import credit_scope
from cogs import render
from cogs.interactions import anywhere, is_personal, role_ids, server_of

if TYPE_CHECKING:
    from cogs.app import Retouch
    from cogs.interactions import Interaction

HISTORY_PAGE = 10


def credit_guild(interaction: Interaction) -> int:
    """The books the member's edits here are paid from (see `bot.credits.credit_scope`)."""
    return credit_scope(server_of(interaction), personal=is_personal(interaction))


@anywhere
class Credits(commands.GroupCog, group_name="credits", group_description="Your image-editing credits"):
    def __init__(self, bot: Retouch) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="balance", description="What you can spend now, and when it refills")
    async def balance(self, interaction: Interaction) -> None:
        balance = await self.bot.credits.balance(
            credit_guild(interaction), interaction.user.id, role_ids(interaction)
        )
        await interaction.response.send_message(render.balance_text(balance), ephemeral=True)

    @app_commands.command(name="history", description="Your recent credit entries")
    @app_commands.describe(page="Page number, newest first (10 entries a page)")
    async def history(self, interaction: Interaction, page: app_commands.Range[int, 1, 1000] = 1) -> None:
        entries = await self.bot.credits.history(
            credit_guild(interaction),
            interaction.user.id,
            limit=HISTORY_PAGE,
            offset=(page - 1) * HISTORY_PAGE,
        )
        await interaction.response.send_message(render.ledger_text(entries, page), ephemeral=True)

    @app_commands.command(name="prices", description="What an edit costs in credits")
    async def prices(self, interaction: Interaction) -> None:
        made = self.bot.jobs.resolutions  # no price for a size no host here makes
        table = {
            quality: {size: credits for size, credits in by_size.items() if size in made}
            for quality, by_size in self.bot.credits.price_table().items()
        }
        await interaction.response.send_message(render.prices_text(table), ephemeral=True)


async def setup(bot: Retouch) -> None:
    await bot.add_cog(Credits(bot))
