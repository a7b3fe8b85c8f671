"""Credits as members and moderators meet them: balances, refusals, confirmation, /quota."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, buttons, has_image, private_answer, shows, text
from tests.fakes.discord import FakeDiscord
from tests.fakes.runflow import FakeRunflow
from tests.images import png

REAL_PRICES = {"RETOUCH_CREDITS__DEFAULT_ALLOWANCE": "50", "RETOUCH_CREDITS__CONFIRM_ABOVE": "20"}
pytestmark = pytest.mark.parametrize("overrides", [REAL_PRICES])


async def balance_of(retouch: InProcessBot, fake: FakeDiscord, user: int | None = None) -> int:
    assert retouch.bot is not None
    return (await retouch.bot.credits.balance(fake.guild_id, user or fake.member_id)).available


async def test_balance_and_prices_are_private(retouch: InProcessBot, discord_fake: FakeDiscord) -> None:
    balance = await (await discord_fake.slash("credits", subcommand="balance")).wait_response()
    assert balance["data"]["flags"] & EPHEMERAL
    assert "**50 credits**" in balance["data"]["content"]
    prices = await (await discord_fake.slash("credits", subcommand="prices")).wait_response()
    # Runflow makes only 1K, so larger sizes have no price here.
    assert "**high**: 14 at 1K\n" in prices["data"]["content"] and "2K" not in prices["data"]["content"]


async def test_an_edit_the_member_cannot_afford_is_refused_with_cost_balance_and_refill(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    image = discord_fake.add_cdn_file(png(), "p.png")
    text = await private_answer(await discord_fake.slash("edit", prompt="xy", image=image, count=4))
    # The public "thinking" message was withdrawn: only the member's private answer is left.
    assert all(message["flags"] & EPHEMERAL for message in discord_fake.messages.values())
    assert "costs 56 credits but you have 50" in text and "refills" in text
    assert runflow.runs == {}


async def test_an_expensive_edit_asks_first_and_charges_once_delivered(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    image = discord_fake.add_cdn_file(png(), "p.png")
    ask = await private_answer(await discord_fake.slash("edit", prompt="two", image=image, count=2))
    assert "costs **28 credits**" in ask
    assert runflow.runs == {}
    question = await discord_fake.wait_for_message(shows("Go ahead?"))
    assert buttons(question) == ["Confirm", "Cancel"]
    await discord_fake.click(question, "Confirm")
    result = await discord_fake.wait_for_message(has_image)
    assert len(result["attachments"]) == 2 and "28 credits" in text(result)
    assert retouch.bot is not None
    # One job, whatever its id: asking first rolled back a row, and PostgreSQL's ids do not.
    [row] = await retouch.bot.db.fetch_all("SELECT id FROM jobs")
    await retouch.bot.jobs.wait_settled(row["id"])
    assert await balance_of(retouch, discord_fake) == 50 - 28
    # The job row shows what was held and charged; its owner money is the hold's.
    [job] = await retouch.bot.db.fetch_all(
        "SELECT j.credits_estimated, j.usd_reserved_micros, j.credits_charged, h.usd_micros AS held_usd "
        "FROM jobs j JOIN credit_holds h ON h.job_id = j.id"
    )
    assert (job["credits_estimated"], job["credits_charged"]) == (28, 28)
    assert job["usd_reserved_micros"] == job["held_usd"] > 0


async def test_declining_the_confirmation_costs_nothing(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    image = discord_fake.add_cdn_file(png(), "p.png")
    await discord_fake.slash("edit", prompt="two", image=image, count=2)
    question = await discord_fake.wait_for_message(shows("Go ahead?"))
    declined = await (await discord_fake.click(question, "Cancel")).wait_response()
    assert "nothing was charged" in declined["data"]["content"]
    assert runflow.runs == {} and await balance_of(retouch, discord_fake) == 50


async def test_a_failed_edit_costs_nothing(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    runflow.fail_runs = {"failure_code": "PROVIDER_ERROR", "failure_message": "boom"}
    await discord_fake.slash("edit", prompt="xy", image=discord_fake.add_cdn_file(png(), "p.png"))
    await discord_fake.wait_for_message(shows("❌"))
    assert retouch.bot is not None
    await retouch.bot.jobs.wait_settled(1)
    assert await balance_of(retouch, discord_fake) == 50
    history = await (await discord_fake.slash("credits", subcommand="history")).wait_response()
    assert "held for edit #1" in history["data"]["content"]
    assert "returned from edit #1" in history["data"]["content"]


async def test_quota_refuses_members_without_manage_server(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("grant", {"member": discord_fake.member_id, "amount": 5}),
        ("export", {}),
    ]
    for name, options in cases:
        response = await (await discord_fake.slash("quota", subcommand=name, **options)).wait_response()
        assert response["data"]["flags"] & EPHEMERAL
        assert "Manage Server" in response["data"]["content"]
    assert await balance_of(retouch, discord_fake) == 50


async def test_moderator_grants_blocks_and_exports(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    owner, member = discord_fake.owner_id, discord_fake.member_id
    granted = await (
        await discord_fake.slash(
            "quota", subcommand="grant", user=owner, member=member, amount=25, reason="contest prize"
        )
    ).wait_response()
    assert (
        "Granted 25 credits" in granted["data"]["content"] and "contest prize" in granted["data"]["content"]
    )
    assert await balance_of(retouch, discord_fake) == 75
    await (
        await discord_fake.slash("quota", subcommand="set-default", user=owner, amount=100)
    ).wait_response()
    assert await balance_of(retouch, discord_fake) == 125
    await (await discord_fake.slash("quota", subcommand="block", user=owner, member=member)).wait_response()
    refused = await private_answer(
        await discord_fake.slash("edit", prompt="xy", image=discord_fake.add_cdn_file(png(), "p.png"))
    )
    assert "blocked" in refused
    exported = await (await discord_fake.slash("quota", subcommand="export", user=owner)).wait_response()
    rows = list(csv.DictReader(io.StringIO(exported["files"][0]["data"].decode())))
    assert [(row["kind"], row["amount"]) for row in rows] == [("grant", "25")]


async def test_role_and_member_allowances(retouch: InProcessBot, discord_fake: FakeDiscord) -> None:
    owner = discord_fake.owner_id
    role = discord_fake.add_role("artists")
    artist = discord_fake.add_member("artist", roles=[role])
    said = await (
        await discord_fake.slash("quota", subcommand="set-role", user=owner, role=role, amount=80)
    ).wait_response()
    assert f"<@&{role}> now gets 80 credits per period." in said["data"]["content"]
    assert retouch.bot is not None
    assert (await retouch.bot.credits.balance(discord_fake.guild_id, artist, [role])).available == 80
    said = await (
        await discord_fake.slash("quota", subcommand="set-user", user=owner, member=artist, amount=5)
    ).wait_response()
    assert f"<@{artist}> now gets 5 credits per period." in said["data"]["content"]
    assert (await retouch.bot.credits.balance(discord_fake.guild_id, artist, [role])).available == 5
    said = await (
        await discord_fake.slash("quota", subcommand="set-user", user=owner, member=artist)
    ).wait_response()
    assert "now gets the allowance of their roles" in said["data"]["content"]
    assert (await retouch.bot.credits.balance(discord_fake.guild_id, artist, [role])).available == 80
