"""/quota: moderators set allowances, grant and take credits, block members, see usage.

Discord hides the group from members without Manage Server by default, but a server can
change that, so every subcommand checks the permission again here. Each change is written
to the ledger or the audit log by the credit service and confirmed back in one line.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.credits import period_bounds
from cogs import render
from cogs.interactions import can_moderate

if TYPE_CHECKING:
    from cogs.app import Retouch
    from cogs.interactions import Interaction

BEGINNING = datetime(2015, 1, 1, tzinfo=UTC)  # before Discord's epoch: "all time"
NOT_A_MODERATOR = "Only members with the Manage Server permission can change credits."
Period = Literal["day", "week", "month", "none"]
UsagePeriod = Literal["day", "week", "month", "all"]


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Quota(commands.GroupCog, group_name="quota", group_description="Manage members' editing credits"):
    def __init__(self, bot: Retouch) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: Interaction) -> bool:  # type: ignore[override]
        if can_moderate(interaction):
            return True
        await interaction.response.send_message(NOT_A_MODERATOR, ephemeral=True)
        return False

    async def _done(self, interaction: Interaction, text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=render.NO_PINGS)

    def _guild(self, interaction: Interaction) -> int:
        assert interaction.guild_id is not None  # guild_only
        return interaction.guild_id

    @app_commands.command(name="show", description="A member's credits, or the server's settings")
    @app_commands.describe(member="Whose credits to show (leave out for the server's settings)")
    async def show(self, interaction: Interaction, member: discord.Member | None = None) -> None:
        guild_id = self._guild(interaction)
        if member is None:
            await self._done(interaction, render.quota_text(await self.bot.credits.quota(guild_id)))
            return
        balance = await self.bot.credits.balance(guild_id, member.id, [role.id for role in member.roles])
        blocked = await self.bot.credits.is_blocked(guild_id, member.id)
        await self._done(
            interaction,
            f"{member.mention}: {render.balance_text(balance)}" + (" **Blocked.**" if blocked else ""),
        )

    @app_commands.command(name="set-default", description="Credits every member gets per period")
    async def set_default(
        self, interaction: Interaction, amount: app_commands.Range[int, 0, 1_000_000]
    ) -> None:
        await self.bot.credits.set_allowance(
            guild_id=self._guild(interaction),
            scope="default",
            target_id=0,
            amount=amount,
            actor_id=interaction.user.id,
        )
        await self._done(interaction, f"Every member now gets {amount} credits per period.")

    @app_commands.command(name="set-role", description="Credits per period for members with a role")
    @app_commands.describe(amount="Credits per period; leave out to remove the role's allowance")
    async def set_role(
        self,
        interaction: Interaction,
        role: discord.Role,
        amount: app_commands.Range[int, 0, 1_000_000] | None = None,
    ) -> None:
        await self._set_allowance(
            interaction, "role", role, amount, removed=f"{role.mention} no longer has its own allowance."
        )

    @app_commands.command(name="set-user", description="Credits per period for one member, over any role")
    @app_commands.describe(amount="Credits per period; leave out to remove the member's own allowance")
    async def set_user(
        self,
        interaction: Interaction,
        member: discord.Member,
        amount: app_commands.Range[int, 0, 1_000_000] | None = None,
    ) -> None:
        await self._set_allowance(
            interaction,
            "user",
            member,
            amount,
            removed=f"{member.mention} now gets the allowance of their roles.",
        )

    async def _set_allowance(
        self,
        interaction: Interaction,
        scope: Literal["role", "user"],
        target: discord.Role | discord.Member,
        amount: int | None,
        *,
        removed: str,
    ) -> None:
        await self.bot.credits.set_allowance(
            guild_id=self._guild(interaction),
            scope=scope,
            target_id=target.id,
            amount=amount,
            actor_id=interaction.user.id,
        )
        text = f"{target.mention} now gets {amount} credits per period." if amount is not None else removed
        await self._done(interaction, text)

    @app_commands.command(
        name="grant", description="Give a member bonus credits (spent after their allowance)"
    )
    @app_commands.describe(expires_in_days="Bonus credits lapse after this many days (leave out: never)")
    async def grant(
        self,
        interaction: Interaction,
        member: discord.Member,
        amount: app_commands.Range[int, 1, 1_000_000],
        reason: app_commands.Range[str, 1, 200] = "granted by a moderator",
        expires_in_days: app_commands.Range[int, 1, 3650] | None = None,
    ) -> None:
        expires = self.bot.clock.now() + timedelta(days=expires_in_days) if expires_in_days else None
        await self.bot.credits.grant(
            guild_id=self._guild(interaction),
            user_id=member.id,
            amount=amount,
            actor_id=interaction.user.id,
            reason=reason,
            expires_at=expires,
            key=str(interaction.id),
        )
        until = f", lapsing {discord.utils.format_dt(expires, 'R')}" if expires else ""
        await self._done(
            interaction, f"Granted {amount} credits to {member.mention}{until}: {render.plain(reason)}."
        )

    @app_commands.command(name="revoke", description="Take bonus credits away from a member")
    async def revoke(
        self,
        interaction: Interaction,
        member: discord.Member,
        amount: app_commands.Range[int, 1, 1_000_000],
        reason: app_commands.Range[str, 1, 200] = "revoked by a moderator",
    ) -> None:
        await self.bot.credits.revoke(
            guild_id=self._guild(interaction),
            user_id=member.id,
            amount=amount,
            actor_id=interaction.user.id,
            reason=reason,
            key=str(interaction.id),
        )
        await self._done(interaction, f"Took {amount} credits from {member.mention}: {render.plain(reason)}.")

    @app_commands.command(name="block", description="Stop a member from editing images here")
    async def block(
        self,
        interaction: Interaction,
        member: discord.Member,
        reason: app_commands.Range[str, 1, 200] = "blocked by a moderator",
    ) -> None:
        await self.bot.credits.block(
            guild_id=self._guild(interaction), user_id=member.id, actor_id=interaction.user.id, reason=reason
        )
        await self._done(
            interaction, f"{member.mention} can no longer edit images here: {render.plain(reason)}."
        )

    @app_commands.command(name="unblock", description="Let a blocked member edit images again")
    async def unblock(self, interaction: Interaction, member: discord.Member) -> None:
        await self.bot.credits.unblock(
            guild_id=self._guild(interaction), user_id=member.id, actor_id=interaction.user.id
        )
        await self._done(interaction, f"{member.mention} can edit images again.")

    @app_commands.command(name="period", description="How often allowances refill (UTC)")
    async def period(self, interaction: Interaction, period: Period) -> None:
        await self.bot.credits.set_period(
            guild_id=self._guild(interaction), period=period, actor_id=interaction.user.id
        )
        await self._done(
            interaction,
            f"Allowances now refill every {period}." if period != "none" else "Allowances no longer refill.",
        )

    @app_commands.command(name="server-cap", description="Most credits the whole server may spend per period")
    @app_commands.describe(amount="Credits per period for everyone together; leave out to lift the cap")
    async def server_cap(
        self, interaction: Interaction, amount: app_commands.Range[int, 0, 100_000_000] | None = None
    ) -> None:
        await self.bot.credits.set_server_cap(
            guild_id=self._guild(interaction), amount=amount, actor_id=interaction.user.id
        )
        await self._done(
            interaction,
            f"The server may now spend {amount} credits per period."
            if amount is not None
            else "The server cap is lifted.",
        )

    @app_commands.command(name="usage", description="Who spent how much (top members, totals, USD)")
    async def usage(self, interaction: Interaction, period: UsagePeriod = "month") -> None:
        since, _ = period_bounds("none" if period == "all" else period, self.bot.clock.now())
        rows = await self.bot.credits.usage(self._guild(interaction), since=since or BEGINNING)
        await self._done(interaction, render.usage_text(rows, period))

    @app_commands.command(name="export", description="The server's credit ledger as a CSV file")
    async def export(self, interaction: Interaction) -> None:
        data = await self.bot.credits.export_csv(self._guild(interaction))
        await interaction.response.send_message(
            "The ledger, oldest entry first.",
            file=discord.File(
                io.BytesIO(data.encode()), filename=f"retouch-ledger-{self._guild(interaction)}.csv"
            ),
            ephemeral=True,
        )


async def setup(bot: Retouch) -> None:
    await bot.add_cog(Quota(bot))
