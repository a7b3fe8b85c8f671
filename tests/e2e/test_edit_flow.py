"""A member's view of the walking skeleton: /edit, the result, Refine, and a restart."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.e2e.conftest import BotProcess, InProcessBot
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow, expected_output_image
from tests.images import decode, png

EPHEMERAL = 64


def has_image(message: dict[str, Any]) -> bool:
    return bool(message.get("attachments")) and bool(message.get("components"))


def button_labels(message: dict[str, Any]) -> list[str]:
    labels = []
    for row in message.get("components", []):
        for component in row.get("components", []):
            if component.get("type") == 2:
                labels.append(component.get("label"))
    return labels


async def test_startup_logs_in_and_syncs_commands(retouch: InProcessBot, discord_fake: FakeDiscord) -> None:
    paths = [(r.method, r.path) for r in discord_fake.requests]
    assert paths[:2] == [("GET", "/users/@me"), ("GET", "/oauth2/applications/@me")]
    assert ("PUT", f"/applications/{discord_fake.app_id}/commands") in paths
    edit = discord_fake.commands["edit"]
    options = {option["name"]: option for option in edit["options"]}
    assert options["prompt"]["type"] == 3 and options["prompt"]["required"]
    assert options["image"]["type"] == 11


async def test_edit_returns_the_edited_image_with_a_refine_button(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    source = png(64, 48)
    attachment = discord_fake.add_cdn_file(source, "photo.png")
    interaction = await discord_fake.slash("edit", prompt="invert the colours", image=attachment)
    first = await interaction.wait_response()
    assert first["type"] == 5  # deferred inside the 3-second window
    result = await discord_fake.wait_for_message(has_image)
    assert button_labels(result) == ["Refine", "Retry", "Vary", "Info", "Delete"]
    assert "invert the colours" in result["content"]
    edited = decode(discord_fake.file_bytes(result["attachments"][0]))
    assert edited.tobytes() == expected_output_image(decode(source)).convert(edited.mode).tobytes()
    run = runflow.runs[next(iter(runflow.runs))]
    assert run.input["image_urls"] == [attachment["url"]]
    assert run.input["prompt"] == "invert the colours"
    assert discord_fake.unanswered() == []


async def test_refine_opens_a_modal_and_edits_the_previous_output(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    attachment = discord_fake.add_cdn_file(png(), "photo.png")
    await discord_fake.slash("edit", prompt="first pass", image=attachment)
    first = await discord_fake.wait_for_message(has_image)
    click = await discord_fake.click(first, "Refine")
    modal = await click.wait_modal()
    assert modal["title"] == "Refine this edit"
    submitted = await discord_fake.submit_modal(click, {"prompt": "second pass"})
    assert (await submitted.wait_response())["type"] == 5
    second = await discord_fake.wait_for_message(lambda m: has_image(m) and m["id"] != first["id"])
    assert "second pass" in second["content"]
    second_run = await runflow.wait_for_run(count=2)
    assert second_run.input["image_urls"] == [first["attachments"][0]["url"]]
    assert second_run.input["prompt"] == "second pass"


async def test_refine_works_after_a_restart(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    await discord_fake.slash("edit", prompt="before restart", image=discord_fake.add_cdn_file(png(), "p.png"))
    result = await discord_fake.wait_for_message(has_image)
    await retouch.restart()
    click = await discord_fake.click(result, "Refine")
    modal = await click.wait_modal()
    assert modal["title"] == "Refine this edit"


async def test_a_file_that_is_not_an_image_is_refused_privately(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    attachment = discord_fake.add_cdn_file(b"just some text", "notes.png", content_type="text/plain")
    interaction = await discord_fake.slash("edit", prompt="edit this", image=attachment)
    response = await interaction.wait_response()
    assert response["type"] == 4
    assert response["data"]["flags"] & EPHEMERAL
    assert "not an image" in response["data"]["content"]
    assert runflow.runs == {}


async def test_host_failure_is_explained_to_the_member(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.fail_runs = {"failure_code": "CONTENT_POLICY_VIOLATION", "failure_message": "blocked"}
    await discord_fake.slash("edit", prompt="something", image=discord_fake.add_cdn_file(png(), "p.png"))
    failed = await discord_fake.wait_for_message(lambda m: "❌" in m.get("content", ""))
    assert "safety filter" in failed["content"]
    assert not failed.get("attachments")


async def test_healthz_reports_database_and_gateway(retouch: InProcessBot) -> None:
    assert retouch.bot is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{retouch.bot.web.port}/healthz") as response,
    ):
        body = await response.json()
    assert response.status == 200
    assert body == {"status": "ok", "database": "ok", "gateway": "ready", "accepting_edits": True}


async def test_bot_as_a_subprocess_edits_and_stops_cleanly_on_sigterm(
    bot_process: BotProcess, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    await bot_process.start()
    await discord_fake.wait_ready(timeout=30)
    source = png(32, 32)
    await discord_fake.slash(
        "edit", prompt="from a subprocess", image=discord_fake.add_cdn_file(source, "s.png")
    )
    result = await discord_fake.wait_for_message(has_image, timeout=30)
    edited = decode(discord_fake.file_bytes(result["attachments"][0]))
    assert edited.tobytes() == expected_output_image(decode(source)).convert(edited.mode).tobytes()
    assert await bot_process.terminate() == 0
    log = bot_process.log()
    assert "shutting down" in log
    assert discord_fake.token not in log and runflow.api_key not in log


async def test_restarted_subprocess_handles_a_click_on_an_old_result(
    bot_process: BotProcess, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    await bot_process.start()
    await discord_fake.wait_ready(timeout=30)
    await discord_fake.slash("edit", prompt="old result", image=discord_fake.add_cdn_file(png(), "o.png"))
    result = await discord_fake.wait_for_message(has_image, timeout=30)
    assert await bot_process.terminate() == 0
    await discord_fake.wait_disconnected()
    await bot_process.start()
    await discord_fake.wait_ready(timeout=30)
    click = await discord_fake.click(result, "Refine")
    assert (await click.wait_modal())["title"] == "Refine this edit"


async def test_a_stop_while_the_host_is_answering_a_submit_never_submits_it_again(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    """A deploy that stops the bot between a host accepting a run and the bot reading its answer
    must not leave that run unrecorded: the job would go back in line and run (and be billed by
    the host) twice."""
    runflow.hang_next("POST", r"/runs$", seconds=1.0)
    await discord_fake.slash("edit", prompt="mid-deploy", image=discord_fake.add_cdn_file(png(), "p.png"))
    await runflow.wait_for_run()  # accepted; its answer is on hold
    await retouch.restart()
    await discord_fake.wait_for_message(has_image)
    assert len(runflow.runs) == 1
