"""Tests of the Discord fake itself, driven by a tiny real discord.py bot over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands
from PIL import Image

from .discord import FakeDiscord

MiB = 1024 * 1024


def _png(size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


class RefineModal(discord.ui.Modal, title="Refine"):
    prompt: discord.ui.TextInput[RefineModal] = discord.ui.TextInput(label="New prompt", custom_id="prompt")
    strength: discord.ui.Label[RefineModal] = discord.ui.Label(
        text="Strength", component=discord.ui.TextInput(custom_id="strength", default="5")
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        strength = self.strength.component
        assert isinstance(strength, discord.ui.TextInput)
        await interaction.followup.send(f"refined: {self.prompt.value} @ {strength.value}")


class ResultView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Refine", custom_id="refine:1")
    async def refine(self, interaction: discord.Interaction, button: discord.ui.Button[ResultView]) -> None:
        await interaction.response.send_modal(RefineModal())


class TinyBot(commands.Bot):
    """Just enough bot to exercise the fake: one guild-synced slash command group of behaviours."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.guild = discord.Object(guild_id)
        self.errors: asyncio.Queue[discord.HTTPException] = asyncio.Queue()

        @app_commands.command(description="Edit an image")
        async def edit(interaction: discord.Interaction, prompt: str, image: discord.Attachment) -> None:
            await interaction.response.defer(thinking=True)
            data = await image.read()
            name = f"{prompt}:{len(data)}:{image.width}x{image.height}:{image.content_type}"
            await interaction.followup.send(
                name, file=discord.File(io.BytesIO(data), "out.png"), view=ResultView()
            )

        @app_commands.command(description="Reply once")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

        @app_commands.command(description="Answer late")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.3)  # simulated slow work, past the shrunk deadline
            try:
                await interaction.response.send_message("late")
            except discord.HTTPException as error:
                self.errors.put_nowait(error)

        @app_commands.command(description="Send something big")
        async def big(interaction: discord.Interaction, mib: int, text_len: int = 0) -> None:
            await interaction.response.defer(ephemeral=True)
            try:
                if text_len:
                    await interaction.followup.send("x" * text_len)
                else:
                    await interaction.followup.send(
                        file=discord.File(io.BytesIO(b"\0" * mib * MiB), "big.bin")
                    )
            except discord.HTTPException as error:
                self.errors.put_nowait(error)
                await interaction.followup.send(f"failed {error.status} {error.code}")

        @app_commands.command(description="Defer, then ask for the opposite visibility")
        async def defer(interaction: discord.Interaction, ephemeral: bool) -> None:
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
            await interaction.followup.send("first", ephemeral=not ephemeral)
            await interaction.followup.send("second", ephemeral=not ephemeral)

        @app_commands.command(description="Who is that?")
        async def whois(interaction: discord.Interaction, user: discord.Member) -> None:
            invoker = interaction.user
            assert isinstance(invoker, discord.Member)
            admin = (user.guild_permissions.administrator, invoker.guild_permissions.administrator)
            await interaction.response.send_message(f"{user.id} admin={admin}", ephemeral=True)

        commands_: list[app_commands.Command[Any, Any, None]] = [edit, ping, slow, big, defer, whois]
        for command in commands_:
            self.tree.add_command(command, guild=self.guild)

    async def setup_hook(self) -> None:
        self.add_view(ResultView())  # persistent: its button works after a restart
        await self.tree.sync(guild=self.guild)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = server.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)
        try:
            yield server
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway
        assert not server.internal_errors


@contextlib.asynccontextmanager
async def running_bot(fake: FakeDiscord) -> AsyncIterator[TinyBot]:
    """A bot in this event loop, as ``bot.start()`` would run it, closed on exit."""
    client = TinyBot(fake.guild_id)
    await client.login(fake.token)
    task = asyncio.create_task(client.connect())
    try:
        await fake.wait_ready()
        yield client
    finally:
        await client.close()
        await task


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[TinyBot]:
    async with running_bot(fake) as client:
        yield client


async def test_startup_sequence_sync_and_bad_token(fake: FakeDiscord, bot: TinyBot) -> None:
    paths = [(r.method, r.path) for r in fake.requests]
    assert paths[:3] == [
        ("GET", "/users/@me"),
        ("GET", "/oauth2/applications/@me"),
        ("PUT", f"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands"),
    ]
    assert fake.identifies == 1
    assert [e.get("t") for e in fake.gateway_events_sent if e["op"] == 0][:2] == ["READY", "GUILD_CREATE"]
    assert set(fake.commands) == {"edit", "ping", "slow", "big", "defer", "whois"}
    assert fake.commands["edit"]["guild_id"] == str(fake.guild_id)
    assert bot.application_id == fake.app_id
    assert bot.user is not None and bot.user.id == fake.bot_user_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None and guild.get_channel(fake.channel_id) is not None
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": "Bot nope"}
        async with session.get(fake.api_base + "/users/@me", headers=headers) as response:
            assert response.status == 401
            assert response.headers["Content-Type"] == "application/json"
            assert await response.json() == {"code": 0, "message": "401: Unauthorized"}
        async with session.get(
            fake.api_base + "/nope", headers={"Authorization": f"Bot {fake.token}"}
        ) as response:
            assert (await response.json())["message"] == "fake discord: no route GET /nope"


async def test_user_option_and_member_permissions(fake: FakeDiscord, bot: TinyBot) -> None:
    whois = await fake.slash("whois", user_=fake.owner_id)  # the option is named like slash()'s `user`
    assert (await whois.wait_response())["data"]["content"] == f"{fake.owner_id} admin=(True, False)"
    moderator = fake.add_member("mod", permissions=discord.Permissions(administrator=True).value)
    whois = await fake.slash("whois", user_=fake.member_id, user=moderator)
    assert (await whois.wait_response())["data"]["content"] == f"{fake.member_id} admin=(False, True)"
    with pytest.raises(AssertionError, match="missing required options"):
        await fake.slash("whois")


async def test_command_validation(fake: FakeDiscord, bot: TinyBot) -> None:
    with pytest.raises(discord.HTTPException) as caught:
        await bot.http.bulk_upsert_guild_commands(
            fake.app_id, fake.guild_id, [{"name": "ok", "description": "d" * 101, "type": 1}]
        )
    assert caught.value.code == 50035
    assert "description" in caught.value.text


async def test_slash_attachment_defer_followup_click_modal(fake: FakeDiscord, bot: TinyBot) -> None:
    image = fake.add_cdn_file(_png(), "cat photo.png")
    assert (image["width"], image["height"], image["content_type"]) == (4, 3, "image/png")
    command = await fake.slash("edit", prompt="sunset", image=image)
    assert (await command.wait_response())["type"] == 5
    result = await command.wait_followup(predicate=lambda m: bool(m["attachments"]))
    assert result["content"] == f"sunset:{len(_png())}:4x3:image/png"
    assert int(result["id"]) == command.original_id  # the followup replaced the thinking message
    assert result["flags"] == 0
    assert fake.file_bytes(result["attachments"][0]) == _png()
    async with aiohttp.ClientSession() as session, session.get(result["attachments"][0]["url"]) as response:
        assert await response.read() == _png()

    click = await fake.click(result, "Refine")
    modal = await click.wait_modal()
    assert modal["title"] == "Refine"
    submit = await fake.submit_modal(click, {"prompt": "more orange"})  # by custom_id
    refined = await submit.wait_followup()
    assert refined["content"] == "refined: more orange @ 5"  # the Label-wrapped input kept its default
    reopened = await fake.click(result, "Refine")  # a submitted modal is gone: open a new one
    again = await fake.submit_modal(reopened, {"New prompt": "less", "Strength": "7"})  # by label
    assert (await again.wait_followup())["content"] == "refined: less @ 7"
    assert refined["interaction_metadata"]["type"] == 5
    with pytest.raises(AssertionError, match=r"no button 'Nope'.*'Refine' \(refine:1\)"):
        await fake.click(result, "Nope")
    assert fake.unanswered() == []


async def test_second_ack_and_late_first_response(fake: FakeDiscord, bot: TinyBot) -> None:
    ping = await fake.slash("ping")
    assert (await ping.wait_response())["data"]["content"] == "pong"
    # discord.py refuses a second response locally, so send it the way another process would.
    url = f"{fake.api_base}/interactions/{ping.id}/{ping.token}/callback"
    async with aiohttp.ClientSession() as session, session.post(url, json={"type": 6}) as response:
        assert (response.status, await response.json()) == (
            400,
            {"code": 40060, "message": "Interaction has already been acknowledged."},
        )
    assert [r["status"] for r in ping.responses] == [200, 400]

    fake.deadline = 0.1
    slow = await fake.slash("slow")
    error = await asyncio.wait_for(bot.errors.get(), 5)
    assert (error.status, error.code) == (404, 10062)
    assert fake.unanswered() == [slow]


async def test_limits_413_and_50035(fake: FakeDiscord, bot: TinyBot) -> None:
    big = await fake.slash("big", mib=11)
    failed = await big.wait_followup(predicate=lambda m: m["content"].startswith("failed"))
    assert failed["content"] == "failed 413 40005"
    long = await fake.slash("big", mib=0, text_len=2001)
    failed = await long.wait_followup(predicate=lambda m: m["content"].startswith("failed"))
    assert failed["content"] == "failed 400 50035"


async def test_first_followup_after_defer_keeps_the_defers_visibility(
    fake: FakeDiscord, bot: TinyBot
) -> None:
    private = await fake.slash("defer", ephemeral=True)
    await private.wait_followup(predicate=lambda m: m["content"] == "second")
    first, second = private.followups
    assert int(first["id"]) == private.original_id and first["flags"] == 64  # asked for public
    assert second["flags"] == 0
    public = await fake.slash("defer", ephemeral=False)
    await public.wait_followup(predicate=lambda m: m["content"] == "second")
    first, second = public.followups
    assert int(first["id"]) == public.original_id and first["flags"] == 0  # asked for ephemeral
    assert second["flags"] == 64


async def test_rate_limited_followup_is_retried(fake: FakeDiscord, bot: TinyBot) -> None:
    fake.rate_limit_next("POST", r"^/webhooks/\d+/[^/]+$", retry_after=0.2)
    since = len(fake.requests)
    interaction = await fake.slash("defer", ephemeral=False)
    await interaction.wait_followup(predicate=lambda m: m["content"] == "second")
    statuses = [r.status for r in fake.requests[since:] if r.path.startswith("/webhooks/")]
    assert statuses == [429, 200, 200]


async def test_resume_then_restart_keeps_the_world(fake: FakeDiscord) -> None:
    async with running_bot(fake):
        ping = await fake.slash("ping")
        await ping.wait_response()
        await fake.disconnect_gateway()
        await fake.wait_ready()  # discord.py reconnected and resumed
        assert fake.identifies == 1
        assert [e.get("t") for e in fake.gateway_events_sent if e["op"] == 0][-1] == "RESUMED"
        image = fake.add_cdn_file(_png(), "in.png")
        edit = await fake.slash("edit", prompt="p", image=image)
        result = await edit.wait_followup()
    await fake.wait_disconnected()

    async with running_bot(fake):  # a new process would do the same: IDENTIFY again
        assert fake.identifies == 2
        click = await fake.click(result, "Refine")  # the message survived; the persistent view answers
        assert (await click.wait_modal())["title"] == "Refine"
