"""Tests of the Discord fake itself, driven by a tiny real discord.py bot over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands
from PIL import Image

from .discord import DiscordError, FakeDiscord, command_contexts, validate_modal

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


class FormModal(discord.ui.Modal, title="Form"):
    """A Label around each kind of input the fake submits: text, string select and file upload."""

    caption: discord.ui.Label[FormModal] = discord.ui.Label(
        text="Caption", component=discord.ui.TextInput(custom_id="caption")
    )
    style: discord.ui.Label[FormModal] = discord.ui.Label(
        text="Style",
        component=discord.ui.Select(
            custom_id="style",
            options=[
                discord.SelectOption(label="Photo", value="photo"),
                discord.SelectOption(label="Sketch", value="sketch"),
            ],
        ),
    )
    reference: discord.ui.Label[FormModal] = discord.ui.Label(
        text="Reference", component=discord.ui.FileUpload(custom_id="reference", required=False)
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        caption, style, upload = self.caption.component, self.style.component, self.reference.component
        assert isinstance(caption, discord.ui.TextInput)
        assert isinstance(style, discord.ui.Select)
        assert isinstance(upload, discord.ui.FileUpload)
        files = [f"{file.filename}:{len(await file.read())}" for file in upload.values]  # from the CDN
        await interaction.response.send_message(f"{caption.value}|{','.join(style.values)}|{','.join(files)}")


class ResultView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Refine", custom_id="refine:1")
    async def refine(self, interaction: discord.Interaction, button: discord.ui.Button[ResultView]) -> None:
        await interaction.response.send_modal(RefineModal())


def _where(interaction: discord.Interaction) -> str:
    """Where discord.py thinks an interaction came from: guild, channel class, user class, DM context."""
    kinds = f"{type(interaction.channel).__name__}:{type(interaction.user).__name__}"
    return f"{interaction.guild_id}:{kinds}:{interaction.context.dm_channel}"


class TinyBot(commands.Bot):
    """Just enough bot to exercise the fake: guild-synced slash commands of behaviours, plus global
    commands (the only ones Discord offers in DMs), one of them limited to servers."""

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

        @app_commands.command(description="Open a form with a file upload")
        async def form(interaction: discord.Interaction, max_files: int = 1) -> None:
            modal = FormModal()
            upload = modal.reference.component
            assert isinstance(upload, discord.ui.FileUpload)
            upload.max_values = max_files  # discord.py does not check it: Discord does
            try:
                await interaction.response.send_modal(modal)
            except discord.HTTPException as error:
                self.errors.put_nowait(error)

        commands_: list[app_commands.Command[Any, Any, None]] = [edit, ping, slow, big, defer, whois, form]
        for command in commands_:
            self.tree.add_command(command, guild=self.guild)

        @app_commands.command(description="Edit an image anywhere, then DM a note")
        async def retouch(interaction: discord.Interaction, image: discord.Attachment) -> None:
            await interaction.response.defer(thinking=True)
            data = await image.read()
            await interaction.followup.send(
                f"{_where(interaction)}:{len(data)}",
                file=discord.File(io.BytesIO(data), "out.png"),
                view=ResultView(),
            )
            await interaction.user.send("sent by REST")  # create_dm, then POST /channels/{dm}/messages

        @app_commands.command(description="Only in servers")
        @app_commands.guild_only()
        async def serveronly(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(_where(interaction))

        @app_commands.context_menu(name="Describe image")
        async def describe(interaction: discord.Interaction, message: discord.Message) -> None:
            thumbnail = message.embeds[0].thumbnail
            assert thumbnail.proxy_url is not None  # the bot never fetches the linked URL itself
            data = await self.http.get_from_cdn(thumbnail.proxy_url)
            with Image.open(io.BytesIO(data)) as picture:
                read = f"{picture.width}x{picture.height}"
            name = thumbnail.proxy_url.rsplit("/", 1)[-1]
            size = f"{thumbnail.width}x{thumbnail.height}"
            await interaction.response.send_message(f"{name} {len(data)} bytes {size} read {read}")

        self.tree.add_command(retouch)
        self.tree.add_command(serveronly)
        self.tree.add_command(describe)

    async def setup_hook(self) -> None:
        self.add_view(ResultView())  # persistent: its button works after a restart
        await self.tree.sync(guild=self.guild)
        await self.tree.sync()


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
    guild_commands = {"edit", "ping", "slow", "big", "defer", "whois", "form"}
    assert set(fake.commands) == guild_commands | {"retouch", "serveronly", "Describe image"}
    assert fake.commands["edit"]["guild_id"] == str(fake.guild_id)
    assert "guild_id" not in fake.commands["retouch"]
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


async def test_modal_with_labelled_text_select_and_file_upload(fake: FakeDiscord, bot: TinyBot) -> None:
    form = await fake.slash("form")
    modal = await form.wait_modal()
    assert [(c["type"], c["component"]["type"]) for c in modal["components"]] == [(18, 4), (18, 3), (18, 19)]
    assert modal["components"][2]["component"]["required"] is False
    image = fake.add_cdn_file(_png(), "ref.png")
    with pytest.raises(AssertionError, match="select 'style' is required"):
        await fake.submit_modal(form, {"caption": "x", "style": []})
    with pytest.raises(AssertionError, match=r"file upload 'reference': 2 values, it takes 1\.\.1"):
        await fake.submit_modal(form, {"caption": "x", "style": ["photo"], "reference": [image, image]})
    with pytest.raises(AssertionError, match="takes a list of add_cdn_file"):
        await fake.submit_modal(form, {"caption": "x", "style": ["photo"], "reference": image})

    submit = await fake.submit_modal(form, {"caption": "hello", "Style": ["sketch"], "Reference": [image]})
    assert (await submit.wait_response())["data"]["content"] == f"hello|sketch|ref.png:{len(_png())}"
    upload = submit.data["components"][2]
    assert upload["component"] == {
        "type": 19,
        "id": upload["component"]["id"],
        "custom_id": "reference",
        "values": [image["id"]],
    }
    assert submit.data["resolved"]["attachments"] == {image["id"]: image | {"ephemeral": True}}

    again = await fake.slash("form")  # a submitted modal is gone: open a new one
    empty = await fake.submit_modal(again, {"caption": "bye", "style": ["photo"]})
    assert (await empty.wait_response())["data"]["content"] == "bye|photo|"
    assert empty.data["components"][2]["component"]["values"] == []
    assert "resolved" not in empty.data

    broken = await fake.slash("form", max_files=11)
    error = await asyncio.wait_for(bot.errors.get(), 5)
    assert (error.status, error.code) == (400, 50035)
    assert "max_values" in error.text and "less than or equal to 10" in error.text
    assert broken.modal is None


UPLOAD: dict[str, Any] = {"type": 19, "custom_id": "f"}
SELECT: dict[str, Any] = {"type": 3, "custom_id": "s", "options": [{"label": "a", "value": "a"}]}


@pytest.mark.parametrize(
    ("component", "path", "code"),
    [
        pytest.param(UPLOAD | {"max_values": 11}, "max_values", "NUMBER_TYPE_MAX", id="upload-max-11"),
        pytest.param(
            UPLOAD | {"min_values": 11, "max_values": 10}, "min_values", "NUMBER_TYPE_MAX", id="min-11"
        ),
        pytest.param(
            UPLOAD | {"min_values": 3, "max_values": 2},
            "min_values",
            "COMPONENT_MIN_VALUES_EXCEEDS_MAX",
            id="min-over-max",
        ),
        pytest.param(UPLOAD | {"min_values": 0}, "min_values", "NUMBER_TYPE_MIN", id="min-0-while-required"),
        pytest.param(UPLOAD | {"custom_id": "f" * 101}, "custom_id", "BASE_TYPE_BAD_LENGTH", id="long-id"),
        pytest.param(SELECT | {"options": []}, "options", "BASE_TYPE_BAD_LENGTH", id="select-no-options"),
        pytest.param(SELECT | {"max_values": 26}, "max_values", "NUMBER_TYPE_MAX", id="select-max-26"),
        pytest.param(SELECT | {"disabled": True}, "disabled", "COMPONENT_INVALID_DISABLED", id="disabled"),
        pytest.param({"type": 2, "custom_id": "b", "style": 1}, "type", "UNION_TYPE_CHOICES", id="button"),
    ],
)
def test_modal_label_validation(component: dict[str, Any], path: str, code: str) -> None:
    """Modals Discord refuses are refused here too, so a bot's broken modal fails in tests, not in prod."""
    with pytest.raises(DiscordError) as caught:
        validate_modal(
            {
                "custom_id": "m",
                "title": "t",
                "components": [{"type": 18, "label": "L", "component": component}],
            }
        )
    assert caught.value.code == 50035
    assert caught.value.errors is not None
    errors = caught.value.errors["data"]["components"]["0"]["component"][path]["_errors"]
    assert code in [error["code"] for error in errors]


def test_file_upload_outside_a_label_is_refused() -> None:
    """Discord only takes a file upload inside a label; an optional one may have min_values 0."""
    upload: dict[str, Any] = {"type": 19, "custom_id": "f", "min_values": 0, "required": False}
    with pytest.raises(DiscordError) as caught:
        validate_modal({"custom_id": "m", "title": "t", "components": [{"type": 1, "components": [upload]}]})
    assert caught.value.errors is not None
    errors = caught.value.errors["data"]["components"]["0"]["components"]["0"]["type"]["_errors"]
    assert [error["code"] for error in errors] == ["UNION_TYPE_CHOICES"]
    labelled = validate_modal(
        {"custom_id": "m", "title": "t", "components": [{"type": 18, "label": "L", "component": upload}]}
    )
    assert (labelled["components"][0]["id"], labelled["components"][0]["component"]["id"]) == (1, 2)


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


async def test_an_interaction_is_timed_from_when_its_frame_is_written(
    fake: FakeDiscord, bot: TinyBot
) -> None:
    """The deadline and the benchmarks' latencies start when the bot could first see the event: in
    a burst, a frame queued behind others is written later."""
    connection = fake._shards[0]
    writing, release = asyncio.Event(), asyncio.Event()
    send_str = connection.ws.send_str

    async def first_held(data: str, compress: int | None = None) -> None:
        if not writing.is_set():
            writing.set()
            await release.wait()
        await send_str(data, compress)

    connection.ws.send_str = first_held  # type: ignore[method-assign]
    connection.send({"op": 11})  # a heartbeat ACK, the frame the interaction waits behind
    sending = asyncio.create_task(fake.slash("ping"))
    await writing.wait()
    for _ in range(1000):  # the interaction is in the fake's hands once its frame is queued
        if not connection._queue.empty():
            break
        await asyncio.sleep(0)
    assert not connection._queue.empty()
    held_until = time.monotonic()
    release.set()
    ping = await sending
    assert ping.sent_at > held_until
    assert (await ping.wait_response())["data"]["content"] == "pong"


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


async def test_dm_slash_command_is_answered_in_the_dm(fake: FakeDiscord, bot: TinyBot) -> None:
    """A command used in the bot's DM arrives as Discord sends it there, and every answer (callback,
    followups, a button's modal, a REST send to ``create_dm()``'s channel) lands in that DM."""
    image = fake.add_cdn_file(_png(), "cat.png")
    command = await fake.slash("retouch", dm=True, image=image)
    result = await command.wait_followup(predicate=lambda m: bool(m["attachments"]))
    dm = str(fake.dm_channel_id())
    assert command.in_dm and result["channel_id"] == dm
    assert result["content"] == f"None:DMChannel:User:True:{len(_png())}"
    assert result["interaction_metadata"]["authorizing_integration_owners"] == {"0": "0"}
    sent = next(e["d"] for e in fake.gateway_events_sent if e.get("t") == "INTERACTION_CREATE")
    assert not {"guild_id", "guild", "member", "guild_locale"} & set(sent)
    assert (sent["user"]["id"], sent["channel_id"], sent["context"]) == (str(fake.member_id), dm, 1)
    assert sent["channel"]["type"] == 1 and sent["channel"]["recipients"] == [sent["user"]]
    assert sent["authorizing_integration_owners"] == {"0": "0"}
    by_rest = await fake.wait_for_message(lambda m: m["content"] == "sent by REST")
    assert by_rest["channel_id"] == dm and "interaction_metadata" not in by_rest
    assert (await bot.create_dm(discord.Object(fake.member_id))).id == int(dm)

    click = await fake.click(result, "Refine")
    assert click.in_dm and (await click.wait_modal())["title"] == "Refine"
    submit = await fake.submit_modal(click, {"prompt": "warmer"})
    refined = await submit.wait_followup()
    assert submit.in_dm and (refined["channel_id"], refined["content"]) == (dm, "refined: warmer @ 5")
    assert {m["channel_id"] for m in fake.messages.values()} == {dm}  # nothing in the guild channel
    with pytest.raises(AssertionError, match="cannot see the DM"):
        await fake.click(result, "Refine", user=fake.add_member("other"))
    assert fake.unanswered() == []


async def test_dm_offers_only_global_commands_that_allow_dms(fake: FakeDiscord, bot: TinyBot) -> None:
    """Discord's client offers guild commands only in their guild and ``guild_only`` ones (synced as
    ``dm_permission: false``) only in servers, so the fake refuses to send those from a DM."""
    with pytest.raises(AssertionError, match=r"no synced command 'ping' \(type 1\) in DMs"):
        await fake.slash("ping", dm=True)
    assert fake.commands["serveronly"]["dm_permission"] is False
    with pytest.raises(AssertionError, match="does not offer 'serveronly' in DMs"):
        await fake.slash("serveronly", dm=True)
    assert fake.interactions == []
    in_guild = await (await fake.slash("serveronly")).wait_response()
    assert in_guild["data"]["content"] == f"{fake.guild_id}:TextChannel:Member:False"
    image = fake.add_cdn_file(_png(), "cat.png")
    global_in_guild = await fake.slash("retouch", image=image)
    result = await global_in_guild.wait_followup(predicate=lambda m: bool(m["attachments"]))
    assert result["channel_id"] == str(fake.channel_id)
    assert result["content"] == f"{fake.guild_id}:TextChannel:Member:False:{len(_png())}"


@pytest.mark.parametrize(
    ("definition", "contexts"),
    [
        pytest.param({"guild_id": "1", "contexts": [0, 1]}, {0}, id="guild-command"),
        pytest.param({"contexts": None, "dm_permission": True}, {0, 1}, id="default"),
        pytest.param({"contexts": None, "dm_permission": False}, {0}, id="dm-permission-false"),
        pytest.param({"contexts": [1, 2], "dm_permission": False}, {1}, id="contexts-win"),
        pytest.param({"contexts": [0, 1], "integration_types": [1]}, set(), id="user-install-only"),
    ],
)
def test_command_contexts(definition: dict[str, Any], contexts: set[int]) -> None:
    """``contexts`` overrides the deprecated ``dm_permission``; without a user install there is no
    PRIVATE_CHANNEL, and a command for user installs only is offered nowhere."""
    assert command_contexts(definition) == contexts


async def test_embedded_image_is_fetched_through_the_media_proxy(fake: FakeDiscord, bot: TinyBot) -> None:
    """A linked picture reaches bots as an embed; only its ``proxy_url`` serves bytes, ``url`` is on a
    domain that never resolves. Works the same on a message in the bot's DM."""
    picture = _png((6, 5))
    embed = fake.add_embed_image(picture, "sun set.png")
    thumbnail = embed["thumbnail"]
    assert embed["url"] == thumbnail["url"] == "https://example.invalid/sun_set.png"
    assert (embed["type"], thumbnail["width"], thumbnail["height"]) == ("image", 6, 5)
    assert thumbnail["proxy_url"].startswith(fake.base_url + "/") and thumbnail["proxy_url"].endswith(
        "/sun_set.png"
    )
    posted = await fake.post_message(f"look {embed['url']}", embeds=[embed])
    menu = await fake.message_command("Describe image", posted)
    answer = (await menu.wait_response())["data"]["content"]
    assert answer == f"sun_set.png {len(picture)} bytes 6x5 read 6x5"

    in_dm = await fake.post_message(embed["url"], embeds=[embed], dm=True)
    assert in_dm["channel_id"] == str(fake.dm_channel_id())
    dm_menu = await fake.message_command("Describe image", in_dm)
    assert dm_menu.in_dm and (await dm_menu.wait_response())["data"]["content"] == answer
    assert fake.messages[dm_menu.original_id or 0]["channel_id"] == in_dm["channel_id"]
    async with aiohttp.ClientSession() as session:
        tampered = thumbnail["proxy_url"].replace("/sun_set.png", "/other.png")
        async with session.get(tampered) as response:
            assert response.status == 404


async def test_a_message_pings_whom_its_allowed_mentions_let_through(fake: FakeDiscord, bot: TinyBot) -> None:
    other, role = fake.add_member("Other"), fake.add_role("Loud")
    channel = bot.get_partial_messageable(fake.channel_id)
    text = f"<@{fake.member_id}> <@{other}> <@&{role}> @here"

    def pinged(message: discord.Message) -> tuple[list[int], list[str], bool]:
        stored = fake.messages[message.id]
        return [int(u["id"]) for u in stored["mentions"]], stored["mention_roles"], stored["mention_everyone"]

    assert pinged(await channel.send(text)) == (sorted([fake.member_id, other]), [str(role)], True)
    only = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(fake.member_id)])
    assert pinged(await channel.send(text, allowed_mentions=only)) == ([fake.member_id], [], False)
    assert pinged(await channel.send(text, allowed_mentions=discord.AllowedMentions.none())) == (
        [],
        [],
        False,
    )


@contextlib.asynccontextmanager
async def sharded_clients(
    fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, *shard_ids: list[int] | None
) -> AsyncIterator[list[discord.AutoShardedClient]]:
    """discord.py's own AutoShardedClients, one per list of shards (None: as many as /gateway/bot says)."""
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
    intents = discord.Intents.none() | discord.Intents(guilds=True)
    clients = [
        discord.AutoShardedClient(intents=intents)
        if ids is None
        else discord.AutoShardedClient(intents=intents, shard_count=fake.shard_count, shard_ids=ids)
        for ids in shard_ids
    ]
    tasks = []
    try:
        for client in clients:
            await client.login(fake.token)
            tasks.append(asyncio.create_task(client.connect()))
        # discord.py waits 5 s between two IDENTIFYs of one process, as Discord asks.
        await fake.wait_ready(timeout=30)
        async with asyncio.timeout(10):
            for client in clients:
                await client.wait_until_ready()
        yield clients
    finally:
        for client in clients:
            await client.close()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
    assert not fake.internal_errors


async def test_each_shard_gets_only_its_guilds(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeDiscord(shards=2) as fake:
        second, third = fake.add_guild("Second", shard=1), fake.add_guild("Third", shard=0)
        assert [fake.shard_of(guild) for guild in (fake.guild_id, second, third)] == [0, 1, 0]
        async with sharded_clients(fake, monkeypatch, [0], [1]) as (first_half, second_half):
            assert {guild.id for guild in first_half.guilds} == {fake.guild_id, third.id}
            assert {guild.id for guild in second_half.guilds} == {second.id}
            assert sorted(fake.identified_shards) == [(0, 2), (1, 2)]
            # discord.py names a GUILD_CREATE that says `unavailable: false` "guild_available".
            joined = asyncio.ensure_future(second_half.wait_for("guild_available", timeout=10))
            late = fake.add_guild("Joined later", shard=1)  # GUILD_CREATE only where it belongs
            assert (await joined).id == late.id
            assert first_half.get_guild(late.id) is None


async def test_a_bot_without_a_count_runs_as_many_shards_as_gateway_bot_recommends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeDiscord(shards=2) as fake:
        other = fake.add_guild("On 1", shard=1)
        async with sharded_clients(fake, monkeypatch, None) as (client,):
            assert client.shard_count == 2
            assert sorted(fake.identified_shards) == [(0, 2), (1, 2)]
            assert {guild.id for guild in client.guilds} == {fake.guild_id, other.id}
