"""What every cog reads from an interaction the same way: whose Retouch it is, who acts, with
which roles, and how to answer the member alone.

Kept in one place because each of these is a rule, not a convenience: a member's own install
in a server without Retouch must never be mistaken for that server's, and a private answer
must work whether or not the interaction was already acknowledged.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, TypeVar

import discord
from discord import app_commands

from bot.jobs.access import Actor

if TYPE_CHECKING:
    from cogs.app import Retouch

    Interaction = discord.Interaction[Retouch]

_Offered = TypeVar("_Offered")


def anywhere(command: _Offered) -> _Offered:
    """Offer a member's command wherever the member is: in servers and DMs through the server's
    install, and through the member's own install in servers without Retouch and group DMs."""
    installs = app_commands.allowed_installs(guilds=True, users=True)
    contexts = app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    return installs(contexts(command))


def server_of(interaction: Interaction) -> int | None:
    """The server whose Retouch this is: the interaction's, when that server installed the bot.

    Through a member's own install in a server without Retouch there is none: its settings,
    moderators, roles and credits are not ours to apply, so the member acts as in a DM, alone.
    """
    return interaction.guild_id if interaction.is_guild_integration() else None


def is_personal(interaction: Interaction) -> bool:
    """Reached only through the member's own install: a server without Retouch, or a group DM."""
    if interaction.guild_id is not None:
        return not interaction.is_guild_integration()
    return interaction.context.private_channel


def answers_privately(interaction: Interaction) -> bool:
    """Where a server denies its members Use External Apps, Discord shows a user-installed app's
    replies to the member alone; saying so from the start keeps the edit's messages consistent."""
    return (
        interaction.guild_id is not None
        and is_personal(interaction)
        and not interaction.permissions.use_external_apps
    )


def can_moderate(interaction: Interaction) -> bool:
    """Manage Server in this channel of a server that installed Retouch; checked here, not only by
    Discord's command defaults."""
    return server_of(interaction) is not None and interaction.permissions.manage_guild


def actor_of(interaction: Interaction) -> Actor:
    """Who is acting on a job, and where, as the core's access rule needs it."""
    return Actor(interaction.user.id, server_of(interaction), moderates=can_moderate(interaction))


def role_ids(interaction: Interaction) -> list[int]:
    """The member's roles in a server that installed Retouch; a server without it grants nothing."""
    user = interaction.user
    if server_of(interaction) is None or not isinstance(user, discord.Member):
        return []
    return [role.id for role in user.roles]


def is_age_restricted(channel: object) -> bool:
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


async def answer_privately(interaction: Interaction, text: str) -> None:
    """Tell the member alone, as the first answer or, once acknowledged, as a followup."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def withdraw(
    followup: discord.Webhook,
    message_id: int,
    text: str,
    *,
    private: bool,
    view: discord.ui.View | None = None,
) -> None:
    """Replace a progress message with an answer for the member alone: a private one is simply
    edited; a public one is deleted, so the answer concerns only the member, who gets it in a
    private followup (also when the message is already gone: a repeat after a crash)."""
    if private:
        await followup.edit_message(message_id, content=text, view=view)
        return
    with contextlib.suppress(discord.NotFound):
        await followup.delete_message(message_id)
    if view is None:
        await followup.send(text, ephemeral=True)
    else:
        await followup.send(text, ephemeral=True, view=view)
