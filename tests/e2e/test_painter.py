"""The mask painter over plain HTTP: the Paint button and its private link, a painted mask
queued as the member's edit with every usual check, and links that must be refused."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from yarl import URL

from bot.pictures.files import FileStore
from bot.runtime.clock import SYSTEM_CLOCK
from bot.web.painter import EXPIRED, FORGED, LINK_TTL, OTHER_MEMBER, USED, Painter
from cogs.app import Retouch
from storage.paint_links import PaintLinkRepository
from tests.e2e.conftest import InProcessBot
from tests.e2e.helpers import EPHEMERAL, buttons, has_image, text
from tests.e2e.test_hosts import free_port
from tests.fakes.discord import FakeDiscord, walk_components
from tests.fakes.runflow import FakeRunflow
from tests.images import decode, png

PORT = free_port()
PUBLIC = {"RETOUCH_WEB__PORT": str(PORT), "RETOUCH_WEB__PUBLIC_URL": f"http://127.0.0.1:{PORT}"}
SIZE = (160, 120)
BOX = (40, 30, 100, 80)  # where the test paints


def box_mask(size: tuple[int, int] = SIZE, box: tuple[int, int, int, int] = BOX) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def painter_of(retouch: InProcessBot) -> tuple[Retouch, Painter]:
    assert retouch.bot is not None and retouch.bot.painter is not None
    return retouch.bot, retouch.bot.painter


async def paint_link(fake: FakeDiscord, message: dict[str, Any], *, user: int | None = None) -> str:
    """Press Paint under a result; the private answer's link button."""
    answer = await (await fake.click(message, "Paint", user=user)).wait_response()
    assert answer["type"] == 4 and answer["data"]["flags"] & EPHEMERAL
    links = [c["url"] for c in walk_components(answer["data"]["components"]) if c.get("url")]
    assert len(links) == 1, answer
    return str(links[0])


async def edited(fake: FakeDiscord, prompt: str = "make it blue", **options: Any) -> dict[str, Any]:
    await fake.slash("edit", prompt=prompt, image=fake.add_cdn_file(png(*SIZE), "p.png"), **options)
    return await fake.wait_for_message(lambda m: has_image(m) and prompt in text(m))


async def submit(
    link: str, mask: bytes, *, prompt: str = "paint it gold", quality: str = "low", count: str = "1"
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("prompt", prompt)
    form.add_field("quality", quality)
    form.add_field("count", count)
    form.add_field("mask", mask, filename="mask.png", content_type="image/png")
    async with aiohttp.ClientSession() as session, session.post(f"{link}submit", data=form) as response:
        return response.status, await response.json()


async def get(url: str) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text(), dict(response.headers)


async def mask_received(runflow: FakeRunflow) -> Image.Image:
    """The mask the host was sent for its last run, fetched from where the host fetched it."""
    run = list(runflow.runs.values())[-1]
    async with aiohttp.ClientSession() as session, session.get(run.input["mask_url"]) as response:
        assert response.status == 200
        return decode(await response.read()).convert("L")


async def test_without_a_public_url_there_is_no_paint_button(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    result = await edited(discord_fake)
    assert "Paint" not in buttons(result)
    assert retouch.bot is not None and retouch.bot.painter is None
    assert "Paint image" not in discord_fake.commands


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_a_painted_mask_is_queued_as_the_members_edit_and_the_result_reaches_the_channel(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    bot, _ = painter_of(retouch)
    result = await edited(discord_fake)
    assert "Paint" in buttons(result)
    link = await paint_link(discord_fake, result)
    status, page, headers = await get(link)
    assert status == 200 and "Retouch painter" in page
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{link}state") as response:
            state = await response.json()
        async with session.get(f"{link}image") as response:
            assert decode(await response.read()).size == SIZE
    assert state["prompt"] == "make it blue"  # continuing a result: its prompt, prefilled
    assert state["balance"] == 1000 - 14  # the first edit's high quality cost
    assert state["prices"]["low"]["1"] < state["prices"]["high"]["1"]

    code, answer = await submit(link, box_mask())
    assert (code, answer["state"]) == (200, "queued"), answer
    painted = await discord_fake.wait_for_message(lambda m: has_image(m) and "paint it gold" in text(m))
    assert painted["channel_id"] == result["channel_id"]
    job = await bot.jobs.wait_settled(answer["job"])
    assert job.state.value == "done" and job.parent_id == 1 and job.kind == "refine"
    assert job.credits_charged > 0
    received = await mask_received(runflow)
    assert received.size == SIZE
    assert received.crop(BOX).getextrema() == (255, 255)  # white exactly where it was painted
    assert received.histogram()[255] == (BOX[2] - BOX[0]) * (BOX[3] - BOX[1])  # and nowhere else
    async with aiohttp.ClientSession() as session, session.get(f"{link}status") as response:
        done = await response.json()
    assert done["state"] == "done"
    assert done["message_url"].endswith(f"/{painted['id']}")


def retoken(painter: Painter, link: str, *, user: int | None = None, sig: str | None = None) -> str:
    """The same link with its member or signature changed."""
    token = URL(link).parts[2]
    link_id, member, expires, _ = token.split(".")
    if user is not None:
        token = painter.token(link_id, user, int(expires))
    else:
        token = f"{link_id}.{member}.{expires}.{sig}"
    return link.replace(URL(link).parts[2], token)


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_forged_other_members_expired_and_reused_links_are_refused_with_a_clear_page(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    bot, painter = painter_of(retouch)
    result = await edited(discord_fake)
    link = await paint_link(discord_fake, result)
    forged = retoken(painter, link, sig="0" * 64)
    other = retoken(painter, link, user=discord_fake.add_member("other"))
    for url, status, sentence in ((forged, 403, FORGED), (other, 403, OTHER_MEMBER)):
        for route in ("", "state", "image"):
            code, body, _ = await get(url + route)
            assert code == status, (url + route, body)
            assert sentence in body.replace("&#x27;", "'")
        code, answer = await submit(url, box_mask())
        assert (code, answer["message"]) == (status, sentence)

    code, answer = await submit(link, box_mask())
    assert (code, answer["state"]) == (200, "queued")
    await bot.jobs.wait_settled(answer["job"])
    code, answer = await submit(link, box_mask())
    assert (code, answer["message"]) == (410, USED)
    code, body, _ = await get(link)
    assert code == 410 and USED in body.replace("&#x27;", "'")
    assert len(runflow.runs) == 2  # the first edit and one painted edit, not two

    fresh = await paint_link(discord_fake, result)
    painter.clock = lambda: SYSTEM_CLOCK.now() + timedelta(minutes=15, seconds=1)
    code, body, _ = await get(fresh)
    assert code == 410 and EXPIRED in body
    code, answer = await submit(fresh, box_mask())
    assert (code, answer["message"]) == (410, EXPIRED)
    assert len(runflow.runs) == 2


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_links_long_expired_are_forgotten_when_new_ones_are_made(
    retouch: InProcessBot, discord_fake: FakeDiscord
) -> None:
    bot, painter = painter_of(retouch)
    result = await edited(discord_fake)
    old = await paint_link(discord_fake, result)
    old_id = old.rstrip("/").rsplit("/", 1)[1].split(".")[0]
    links = PaintLinkRepository(bot.db)
    assert await links.get(old_id) is not None
    # Expired, but not a lifetime ago: its page still says so.
    painter.clock = lambda: SYSTEM_CLOCK.now() + LINK_TTL + timedelta(minutes=1)
    await paint_link(discord_fake, result)
    assert await links.get(old_id) is not None
    code, body, _ = await get(old)
    assert code == 410 and EXPIRED in body
    painter.clock = lambda: SYSTEM_CLOCK.now() + 2 * LINK_TTL + timedelta(minutes=1)
    await paint_link(discord_fake, result)
    assert await links.get(old_id) is None


@pytest.mark.parametrize("overrides", [{**PUBLIC, "RETOUCH_CREDITS__DEFAULT_ALLOWANCE": "10"}])
async def test_a_painted_edit_gets_every_usual_check_and_a_refusal_costs_nothing(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    bot, _ = painter_of(retouch)
    result = await edited(discord_fake, quality="low")  # 1 of the 10 credits
    link = await paint_link(discord_fake, result)
    code, answer = await submit(link, box_mask((320, 120)))
    assert code == 400 and "mask is 320×120" in answer["message"]  # fixable: the link stays unused
    code, answer = await submit(link, box_mask(), quality="high")
    assert code == 200 and answer["state"] == "refused"
    assert "credits" in answer["message"]
    async with aiohttp.ClientSession() as session, session.get(f"{link}status") as response:
        assert (await response.json())["message"] == answer["message"]
    assert len(runflow.runs) == 1
    balance = await bot.credits.balance(discord_fake.guild_id, discord_fake.member_id)
    assert balance.available == 10 - 1


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_edit_with_paint_answers_with_the_painter_instead_of_queueing(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    interaction = await discord_fake.slash(
        "edit", prompt="add a hat", image=discord_fake.add_cdn_file(png(*SIZE), "p.png"), paint=True
    )
    answer = await interaction.wait_response()
    assert answer["type"] == 4 and answer["data"]["flags"] & EPHEMERAL
    link = next(c["url"] for c in walk_components(answer["data"]["components"]) if c.get("url"))
    async with aiohttp.ClientSession() as session, session.get(f"{link}state") as response:
        assert (await response.json())["prompt"] == "add a hat"
    assert not runflow.runs
    code, queued = await submit(link, box_mask(), prompt="add a red hat")
    assert (code, queued["state"]) == (200, "queued")
    done = await discord_fake.wait_for_message(lambda m: has_image(m) and "add a red hat" in text(m))
    assert done["channel_id"] == str(discord_fake.channel_id)


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_a_link_survives_a_restart_and_is_still_used_only_once(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    result = await edited(discord_fake)
    link = await paint_link(discord_fake, result)
    await retouch.restart()
    code, answer = await submit(link, box_mask())
    assert (code, answer["state"]) == (200, "queued")
    await discord_fake.wait_for_message(lambda m: has_image(m) and "paint it gold" in text(m))
    await retouch.restart()
    code, answer = await submit(link, box_mask())
    assert (code, answer["message"]) == (410, USED)
    assert len(runflow.runs) == 2


@pytest.mark.parametrize("overrides", [PUBLIC])
async def test_a_painted_mask_is_decoded_within_the_memory_budget(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submit comes from the public web port: its mask is pixel work like any other."""
    from bot.pictures import masks, memory

    budgeted: list[object] = []
    run = memory.MemoryBudget.run

    async def spy(self: memory.MemoryBudget, estimate: Any, work: Any, *args: Any, **kwargs: Any) -> Any:
        budgeted.append(work)
        return await run(self, estimate, work, *args, **kwargs)

    monkeypatch.setattr(memory.MemoryBudget, "run", spy)
    link = await paint_link(discord_fake, await edited(discord_fake))
    budgeted.clear()
    code, answer = await submit(link, box_mask())
    assert (code, answer["state"]) == (200, "queued"), answer
    assert masks.to_bw_mask in budgeted


@pytest.mark.parametrize("overrides", [{**PUBLIC, "RETOUCH_CREDITS__DEFAULT_ALLOWANCE": "10"}])
async def test_a_painted_mask_ends_in_its_edits_folder_and_a_refused_one_is_not_kept(
    retouch: InProcessBot, discord_fake: FakeDiscord, runflow: FakeRunflow
) -> None:
    """The disk cap and retention count a job's folder: a painted mask waits outside one only
    until its edit is prepared, and not at all when the edit is refused."""
    bot, _ = painter_of(retouch)
    files = FileStore(retouch.settings.storage.files_dir)  # for its paths only
    staging = files.staging_path("x").parent
    result = await edited(discord_fake, quality="low")
    code, answer = await submit(await paint_link(discord_fake, result), box_mask())
    assert (code, answer["state"]) == (200, "queued"), answer
    job = await bot.jobs.wait_settled(answer["job"])
    assert job.mask is not None and files.holds(Path(job.mask["path"]))
    assert Path(job.mask["path"]).parent == files.job_dir(job.id)
    assert not list(staging.glob("*"))
    code, answer = await submit(await paint_link(discord_fake, result), box_mask(), quality="high")
    assert (code, answer["state"]) == (200, "refused"), answer
    assert not list(staging.glob("*"))
