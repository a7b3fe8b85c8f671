"""What a member can do with a running edit and a finished one, by the right and wrong person."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.edits import Progress
from storage.jobs import JobState
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, buttons, gallery, has_image, private_answer, shows, text
from tests.fakes.discord import COMPONENTS_V2, FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png

ONE_WORKER = {"RETOUCH_PROVIDERS__RUNFLOW__MAX_CONCURRENCY": "1"}


async def edit(fake: FakeDiscord, prompt: str = "make it blue", **options: Any) -> dict[str, Any]:
    await fake.slash("edit", prompt=prompt, image=fake.add_cdn_file(png(), "p.png"), **options)
    return await fake.wait_for_message(has_image)


async def test_cancel_while_running_stops_waiting_and_shows_it(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.hold = True
    await discord_fake.slash("edit", prompt="slow one", image=discord_fake.add_cdn_file(png(), "p.png"))
    run = await runflow.wait_for_run()
    running = await discord_fake.wait_for_message(shows("Editing"))
    assert "Cancel" in buttons(running)
    click = await discord_fake.click(running, "Cancel")
    response = await click.wait_response()
    assert response["type"] == 7
    assert "cancelled" in response["data"]["content"]
    assert response["data"]["components"] == []
    assert retouch.bot is not None
    job = await retouch.bot.jobs.wait_settled(1)
    assert job.state.value == "cancelled"
    runflow.release()
    await runflow.wait_finished(run.id)
    assert not [m for m in discord_fake.messages.values() if m.get("attachments")]


async def test_progress_waiting_at_a_cancel_never_shows_the_edit_running_again(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    """Progress edits of one message wait out a gap; one waiting when the member cancelled was
    sent after the cancellation, and the message showed the edit running, with its Cancel
    button, after it had said it was cancelled. So was progress a worker showed late."""
    runflow.hold = True
    await discord_fake.slash("edit", prompt="slow one", image=discord_fake.add_cdn_file(png(), "p.png"))
    run = await runflow.wait_for_run()
    running = await discord_fake.wait_for_message(shows("Editing"))
    assert retouch.bot is not None
    delivery = retouch.bot.delivery
    job = await retouch.bot.jobs.get(1)
    assert job is not None
    await delivery.show_progress(job, Progress(JobState.DELIVERING))  # waits out the gap
    click = await discord_fake.click(running, "Cancel")
    assert "cancelled" in (await click.wait_response())["data"]["content"]
    await delivery.show_progress(job, Progress(JobState.DELIVERING))  # a worker's, late
    writer = delivery._writers.get(job.id)
    if writer is not None:
        await asyncio.wait_for(writer, 5)
    assert "cancelled" in text(discord_fake.messages[int(running["id"])])
    assert job.id not in delivery._sent and job.id not in delivery._locks  # nothing kept for it
    runflow.release()
    await runflow.wait_finished(run.id)


@pytest.mark.parametrize("overrides", [ONE_WORKER])
async def test_cancel_while_queued_takes_it_out_of_line(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.hold = True
    other = discord_fake.add_member("other")
    await discord_fake.slash("edit", prompt="first", image=discord_fake.add_cdn_file(png(), "a.png"))
    await runflow.wait_for_run()
    await discord_fake.slash(
        "edit", user=other, prompt="second", image=discord_fake.add_cdn_file(png(), "b.png")
    )
    waiting = await discord_fake.wait_for_message(
        lambda m: "second" in m["content"] and shows("position 1")(m)
    )
    click = await discord_fake.click(waiting, "Cancel", user=other)
    assert "cancelled" in (await click.wait_response())["data"]["content"]
    runflow.release()
    first = await discord_fake.wait_for_message(has_image)
    assert "first" in first["content"]
    assert len(runflow.runs) == 1


async def test_only_the_requester_or_a_moderator_can_cancel(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.hold = True
    stranger = discord_fake.add_member("stranger")
    await discord_fake.slash("edit", prompt="mine", image=discord_fake.add_cdn_file(png(), "p.png"))
    running = await discord_fake.wait_for_message(shows("Editing"))
    refused = await (await discord_fake.click(running, "Cancel", user=stranger)).wait_response()
    assert refused["type"] == 4 and refused["data"]["flags"] & EPHEMERAL
    assert "Only the member who asked" in refused["data"]["content"]
    moderator = await (
        await discord_fake.click(running, "Cancel", user=discord_fake.owner_id)
    ).wait_response()
    assert "cancelled" in moderator["data"]["content"]
    runflow.release()


async def test_retry_runs_the_same_request_again(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await edit(discord_fake, "same again")
    first = await runflow.wait_for_run()
    await discord_fake.click(result, "Retry")
    second = await runflow.wait_for_run(count=2)
    assert second.input["image_urls"] == first.input["image_urls"]
    assert second.input["prompt"] == "same again"
    await discord_fake.wait_for_message(lambda m: has_image(m) and m["id"] != result["id"])


async def test_use_continues_from_the_chosen_output(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await edit(discord_fake, "two takes", count=2)
    assert len(result["attachments"]) == 2
    # A set of results is one Components V2 card: the text, a gallery of the images, the buttons.
    assert result["flags"] & COMPONENTS_V2 and not result["content"]
    assert "two takes" in text(result) and "Edit #1" in text(result)
    assert [item["media"]["url"] for item in gallery(result)] == [a["url"] for a in result["attachments"]]
    assert buttons(result) == ["Refine", "Retry", "Vary", "Info", "Delete", "Use 1", "Use 2"]
    click = await discord_fake.click(result, "Use 2")
    await click.wait_modal()
    await discord_fake.submit_modal(click, {"prompt": "from the second"})
    run = await runflow.wait_for_run(count=2)
    assert run.input["image_urls"] == [result["attachments"][1]["url"]]


async def test_info_shows_the_request_and_its_chain(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    first = await edit(discord_fake, "start")
    click = await discord_fake.click(first, "Refine")
    await click.wait_modal()
    await discord_fake.submit_modal(click, {"prompt": "next"})
    second = await discord_fake.wait_for_message(lambda m: has_image(m) and m["id"] != first["id"])
    info = await (await discord_fake.click(second, "Info")).wait_response()
    assert info["data"]["flags"] & EPHEMERAL
    embed = info["data"]["embeds"][0]
    assert embed["title"] == "Edit #2"
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Continues from"] == "#1"
    run = await runflow.wait_for_run(count=2)
    assert run.id in fields["Host"]


async def test_delete_by_a_stranger_is_refused_and_by_the_requester_works(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await edit(discord_fake)
    stranger = discord_fake.add_member("stranger")
    refused = await (await discord_fake.click(result, "Delete", user=stranger)).wait_response()
    assert "Only the member who asked" in refused["data"]["content"]
    assert int(result["id"]) in discord_fake.messages
    await (await discord_fake.click(result, "Delete")).wait_response()
    # Through the interaction (@original is the pressed message), which can delete a private one too.
    await discord_fake.wait_for_request("DELETE", rf"/messages/(@original|{result['id']})$")
    assert int(result["id"]) not in discord_fake.messages


async def test_history_and_show_bring_back_an_edit(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await edit(discord_fake, "remember me")
    assert retouch.bot is not None
    await retouch.bot.jobs.wait_settled(1)  # the message shows a moment before the row says done
    history = await (await discord_fake.slash("history")).wait_response()
    assert history["data"]["flags"] & EPHEMERAL
    assert "#1" in history["data"]["content"] and "remember me" in history["data"]["content"]
    assert f"/{result['id']})" in history["data"]["content"]
    shown = await (await discord_fake.slash("show", job=1)).wait_response()
    assert shown["type"] == 4
    assert len(shown["files"]) == 1
    stranger = discord_fake.add_member("stranger")
    refused = await (await discord_fake.slash("show", job=1, user=stranger)).wait_response()
    assert refused["data"]["flags"] & EPHEMERAL and "no edit #1" in refused["data"]["content"]


async def test_edit_image_menu_uses_the_messages_pictures(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    picture = discord_fake.add_cdn_file(png(), "holiday.png")
    posted = await discord_fake.post_message("look at this", attachments=[picture])
    menu = await discord_fake.message_command("Edit image", posted)
    assert (await menu.wait_modal())["title"] == "Edit this image"
    await discord_fake.submit_modal(menu, {"prompt": "add fireworks"})
    await discord_fake.wait_for_message(has_image)
    run = await runflow.wait_for_run()
    assert run.input["image_urls"] == [picture["url"]]


async def test_edit_image_on_a_message_without_pictures_is_refused(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    posted = await discord_fake.post_message("no pictures here")
    response = await (await discord_fake.message_command("Edit image", posted)).wait_response()
    assert response["data"]["flags"] & EPHEMERAL and "no image" in response["data"]["content"]


@pytest.mark.parametrize("overrides", [{"RETOUCH_EDITING__MAX_JOBS_PER_MEMBER": "1"}])
async def test_a_member_over_the_in_flight_limit_is_told_privately(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.hold = True
    await discord_fake.slash("edit", prompt="one", image=discord_fake.add_cdn_file(png(), "a.png"))
    await runflow.wait_for_run()
    second = await discord_fake.slash("edit", prompt="two", image=discord_fake.add_cdn_file(png(), "b.png"))
    assert "already have 1 edits in progress" in await private_answer(second)
    runflow.release()


async def test_private_edit_stays_ephemeral(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    interaction = await discord_fake.slash(
        "edit", prompt="secret", image=discord_fake.add_cdn_file(png(), "p.png"), private=True
    )
    assert (await interaction.wait_response())["data"]["flags"] & EPHEMERAL
    result = await discord_fake.wait_for_message(has_image)
    assert result["flags"] & EPHEMERAL


@pytest.mark.parametrize("overrides", [{**ONE_WORKER, "RETOUCH_EDITING__MAX_JOBS_PER_MEMBER": "4"}])
async def test_a_burst_from_five_members_is_served_in_turns(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.hold = True
    members = {name: discord_fake.add_member(name) for name in "ABCDE"}
    for name, member in members.items():
        for n in range(1, 5):
            image = discord_fake.add_cdn_file(png(), "p.png")
            response = await (
                await discord_fake.slash("edit", user=member, prompt=f"{name}{n}", image=image)
            ).wait_response()
            assert response["type"] == 5
            if not runflow.runs:
                # A1 takes the only worker before the rest are asked for: a job is written after
                # its acknowledgement, and on PostgreSQL A2's row could be put in line first and
                # claimed by the idle worker before A1's was there to be taken.
                await runflow.wait_for_run()
    runflow.hold = False
    runflow.release()
    await runflow.wait_for_run(count=20)
    served = [run.input["prompt"] for run in runflow.runs.values()]
    # A1 took the only worker at once; then members take turns: each round serves every member
    # who is still waiting once, in the order their turns came (A, just served, may come after
    # members whose first edit was written before A1 was claimed: the line is shared through the
    # database, and edits are written after their acknowledgement).
    assert served[0] == "A1"
    rounds = [served[1:6], served[6:11], served[11:16], served[16:]]
    assert [sorted(r) for r in rounds] == [
        ["A2", "B1", "C1", "D1", "E1"],
        ["A3", "B2", "C2", "D2", "E2"],
        ["A4", "B3", "C3", "D3", "E3"],
        ["B4", "C4", "D4", "E4"],
    ]
    # A ring: every round goes round the members in the same order.
    ring = [name[0] for name in rounds[0]]
    assert [[name[0] for name in r] for r in rounds] == [ring, ring, ring, [m for m in ring if m != "A"]]


async def test_vary_takes_the_same_prompt_from_this_result(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await edit(discord_fake, "more dramatic")
    await discord_fake.click(result, "Vary")
    second = await runflow.wait_for_run(count=2)
    assert second.input["prompt"] == "more dramatic"
    assert second.input["image_urls"] == [result["attachments"][0]["url"]]


async def test_two_edit_image_forms_never_mix_and_survive_a_restart(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    other = discord_fake.add_member("other")
    first_picture = discord_fake.add_cdn_file(png(), "first.png")
    second_picture = discord_fake.add_cdn_file(png(40, 40), "second.png")
    first = await discord_fake.post_message("one", attachments=[first_picture])
    second = await discord_fake.post_message("two", attachments=[second_picture], user=other)
    mine = await discord_fake.message_command("Edit image", first)
    theirs = await discord_fake.message_command("Edit image", second, user=other)
    await mine.wait_modal()
    await theirs.wait_modal()
    await retouch.restart()
    await discord_fake.submit_modal(theirs, {"prompt": "theirs"})
    await discord_fake.submit_modal(mine, {"prompt": "mine"})
    await runflow.wait_for_run(count=2)
    sent = {run.input["prompt"]: run.input["image_urls"] for run in runflow.runs.values()}
    assert sent == {"theirs": [second_picture["url"]], "mine": [first_picture["url"]]}
