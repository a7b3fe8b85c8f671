"""Never miss a finished edit: the result is a new message that mentions its member (and only
them), and the status message becomes a one-line pointer to it. A member can turn the mention off."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, has_image, text
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png


def mentioned(message: dict[str, Any]) -> list[int]:
    return [int(user["id"]) for user in message.get("mentions", [])]


def jump_link(fake: FakeDiscord, message: dict[str, Any]) -> str:
    return f"https://discord.com/channels/{fake.guild_id}/{message['channel_id']}/{message['id']}"


async def edit(fake: FakeDiscord, prompt: str, **options: Any) -> Any:
    image = fake.add_cdn_file(png(64, 48), "p.png")
    return await fake.slash("edit", prompt=prompt, image=image, **options)


async def test_a_result_is_a_new_message_that_pings_only_its_member_and_the_status_points_to_it(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    other = discord_fake.add_member("bystander")
    interaction = await edit(discord_fake, f"make <@{other}> and @everyone blue")
    result = await discord_fake.wait_for_message(has_image)
    assert int(result["id"]) != interaction.original_id, "the result replaced the status message"
    assert not result["flags"] & EPHEMERAL
    assert mentioned(result) == [discord_fake.member_id] and not result["mention_everyone"]
    assert retouch.bot is not None
    job = await retouch.bot.jobs.wait_settled(1)
    assert job.result_message_id == int(result["id"])
    # The status becomes the pointer beside the settlement, not before it.
    status = await discord_fake.wait_for_message(
        lambda m: int(m["id"]) == interaction.original_id and "Done" in text(m)
    )
    assert jump_link(discord_fake, result) in text(status)
    assert not status.get("components") and not status.get("attachments")
    click = await discord_fake.click(result, "Refine")
    await click.wait_modal()  # the buttons bind to the new message


async def test_a_member_can_turn_the_mention_off_and_on(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    answer = await (await discord_fake.slash("notify", mention="off")).wait_response()
    assert answer["data"]["flags"] & EPHEMERAL and "won't mention you" in answer["data"]["content"]
    interaction = await edit(discord_fake, "quietly")
    quiet = await discord_fake.wait_for_message(has_image)
    assert int(quiet["id"]) != interaction.original_id and mentioned(quiet) == []
    await (await discord_fake.slash("notify", mention="on")).wait_response()
    await retouch.restart()  # the preference is kept in the database
    await edit(discord_fake, "loudly")
    loud = await discord_fake.wait_for_message(lambda m: has_image(m) and m["id"] != quiet["id"])
    assert mentioned(loud) == [discord_fake.member_id]


async def test_a_private_result_is_a_new_private_followup(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    interaction = await edit(discord_fake, "just for me", private=True)
    result = await discord_fake.wait_for_message(has_image)
    assert result["flags"] & EPHEMERAL and int(result["id"]) != interaction.original_id
    assert retouch.bot is not None
    assert (await retouch.bot.jobs.wait_settled(1)).result_message_id == int(result["id"])
    status = await discord_fake.wait_for_message(
        lambda m: int(m["id"]) == interaction.original_id and "Done" in text(m)
    )
    assert status["flags"] & EPHEMERAL
