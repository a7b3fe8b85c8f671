"""`admit` and its rules: the table of what an edit gets (defaults, refusals, confirmation,
upscale sizes), then the decision itself over a real job service on a real SQLite file."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from bot.credits import Balance, Estimate, InsufficientCredits
from bot.edits import EditOptions, EditOrder, NotTaken
from bot.jobs import admission as admission_module
from bot.jobs.admission import (
    NOT_CONFIRMED,
    NOT_IN_DMS,
    PERSONAL_OFF,
    SERVER_PAUSED,
    Admission,
    AdmissionRules,
    NeedsConfirmation,
    Queued,
    Refused,
    Wishes,
    closed_where,
    needs_confirmation,
    options_for,
    server_refusal,
    size_problem,
    upscale_sizes,
    wrong_channel_text,
)
from bot.pictures.sizes import IMAGE_SIZES, RESOLUTIONS
from bot.providers.base import PRESET_SIZES
from bot.runtime.clock import SYSTEM_CLOCK
from bot.runtime.guilds import GuildSettingsService, ServerSettings
from storage.jobs import JobRepository
from storage.member_credits import MemberCreditsRepository
from storage.members import MemberPrefs
from storage.quotas import QuotaRepository
from tests.conftest import StaticFiles
from tests.unit.test_jobs import Harness, order

T = TypeVar("T")
RULES = AdmissionRules(default_quality="medium", confirm_above=20)
ALL_SIZES = frozenset(IMAGE_SIZES)
ALL_RESOLUTIONS = frozenset(RESOLUTIONS)


@pytest.mark.parametrize(
    ("wishes", "server", "expected"),
    [
        # Nothing chosen, nothing set by the server: the bot's defaults.
        (Wishes(), ServerSettings(), EditOptions(quality="medium", image_size="auto", count=1)),
        # The server's defaults fill what the member left.
        (
            Wishes(),
            ServerSettings(default_quality="low", default_size="square_hd", default_count=3),
            EditOptions(quality="low", image_size="square_hd", count=3),
        ),
        # What the member chose wins over the server.
        (
            Wishes(quality="high", count=2, image_size="portrait_4_3", resolution="2K", output_format="webp"),
            ServerSettings(default_quality="low", default_size="square_hd", default_count=3),
            EditOptions(
                quality="high", image_size="portrait_4_3", resolution="2K", count=2, output_format="webp"
            ),
        ),
        # A form that offers no size keeps the picture's shape whatever the server's default.
        (
            Wishes(image_size="auto", private=True),
            ServerSettings(default_size="square_hd"),
            EditOptions(quality="medium", image_size="auto", private=True),
        ),
    ],
)
def test_options_take_the_members_choice_then_the_servers_then_the_bots(
    wishes: Wishes, server: ServerSettings, expected: EditOptions
) -> None:
    assert options_for(wishes, server, RULES, sizes=ALL_SIZES, resolutions=ALL_RESOLUTIONS) == expected


def test_options_are_refused_where_no_host_makes_the_size_or_resolution() -> None:
    only_1k = frozenset({"1K"})
    refused = options_for(
        Wishes(resolution="4K"), ServerSettings(), RULES, sizes=ALL_SIZES, resolutions=only_1k
    )
    assert refused == Refused("This bot's image host cannot make 4K images; pick 1K.")
    # The server's default size is checked like a chosen one.
    server = ServerSettings(default_size="square")
    refused = options_for(Wishes(), server, RULES, sizes=PRESET_SIZES, resolutions=only_1k)
    assert refused == Refused(size_problem("square", PRESET_SIZES))
    assert (
        isinstance(refused, Refused)
        and "“Square”" in refused.reason
        and "“Same shape as the image”" in refused.reason
    )


@pytest.mark.parametrize(
    ("rules", "guild_id", "personal", "expected"),
    [
        (AdmissionRules(), 1, False, None),
        (AdmissionRules(allow_dms=False), None, False, NOT_IN_DMS),
        (AdmissionRules(allow_dms=True), None, False, None),
        (AdmissionRules(personal_allowed=False), 1, True, PERSONAL_OFF),
        (AdmissionRules(personal_allowed=False), None, True, PERSONAL_OFF),
        (AdmissionRules(personal_allowed=True, allow_dms=False), None, True, None),
    ],
)
def test_editing_is_closed_where_the_owner_turned_it_off(
    rules: AdmissionRules, guild_id: int | None, personal: bool, expected: str | None
) -> None:
    assert closed_where(rules, guild_id, personal=personal) == expected


@pytest.mark.parametrize(
    ("server", "channel", "expected"),
    [
        (ServerSettings(), 5, None),
        (ServerSettings(paused=True), 5, SERVER_PAUSED),
        (ServerSettings(allowed_channels=(5, 6)), 5, None),
        (ServerSettings(allowed_channels=(6,)), 5, wrong_channel_text(ServerSettings(allowed_channels=(6,)))),
        (ServerSettings(paused=True, allowed_channels=(6,)), 5, SERVER_PAUSED),
    ],
)
def test_the_servers_moderators_pause_and_choose_channels(
    server: ServerSettings, channel: int, expected: str | None
) -> None:
    assert server_refusal(server, channel) == expected


def test_the_wrong_channel_names_at_most_five_allowed_ones() -> None:
    text = wrong_channel_text(ServerSettings(allowed_channels=tuple(range(1, 8))))
    assert text == "Editing is not allowed in this channel; use <#1>, <#2>, <#3>, <#4>, <#5>."


@pytest.mark.parametrize(
    ("server_threshold", "credits", "available", "asks"),
    [
        (None, 20, 100, False),  # at the bot's threshold: no question
        (None, 21, 100, True),  # above it
        (5, 6, 100, True),  # the server's threshold replaces the bot's
        (50, 21, 100, False),
        (0, 1, 100, True),
        (None, 10, 20, False),  # exactly half of what is left
        (None, 10, 19, True),  # more than half
    ],
)
def test_confirmation_above_the_threshold_or_half_of_what_is_left(
    server_threshold: int | None, credits: int, available: int, asks: bool
) -> None:
    balance = Balance(
        available=available,
        reserved=0,
        allowance=available,
        allowance_used=0,
        bonus=0,
        period="day",
        refills_at=None,
    )
    server = ServerSettings(confirm_above=server_threshold)
    assert needs_confirmation(RULES, server, Estimate(credits, 0), balance) is asks


@pytest.mark.parametrize(
    ("resolution", "offered", "expected"),
    [
        ("1K", ALL_RESOLUTIONS, ["2K", "4K"]),
        ("2K", ALL_RESOLUTIONS, ["4K"]),
        ("4K", ALL_RESOLUTIONS, []),
        ("1K", frozenset({"1K"}), []),
        ("1K", frozenset({"1K", "4K"}), ["4K"]),
    ],
)
def test_upscale_offers_the_larger_sizes_a_host_makes(
    resolution: str, offered: frozenset[str], expected: list[str]
) -> None:
    assert upscale_sizes(resolution, offered) == expected


@pytest.fixture
async def admission(harness: Harness) -> AsyncIterator[Admission]:
    yield Admission(harness.service, GuildSettingsService(harness.db), MemberPrefs(harness.db), RULES)


def _order(static_files: StaticFiles, **options: object) -> EditOrder:
    return order(static_files.add("a.png", b"not fetched before the job runs"), **options)


async def test_a_cheap_edit_is_queued_with_the_servers_and_members_choices(
    harness: Harness, admission: Admission, static_files: StaticFiles
) -> None:
    servers = GuildSettingsService(harness.db)
    await servers.update(1, actor_id=9, nsfw_policy="spoiler", recipe=False)
    await MemberPrefs(harness.db).set_mentions(3, False, now=SYSTEM_CLOCK.now())
    decision = await Admission(harness.service, servers, MemberPrefs(harness.db), RULES).admit(
        _order(static_files, quality="low")
    )
    assert isinstance(decision, Queued)
    stored = await harness.repo.get(decision.job.id)
    assert stored is not None
    assert (stored.options.nsfw_policy, stored.options.recipe, stored.options.mention) == (
        "spoiler",
        False,
        False,
    )
    assert stored.credits_estimated == 1


async def test_a_paused_server_or_another_channel_refuses_before_anything_is_written(
    harness: Harness, static_files: StaticFiles
) -> None:
    servers = GuildSettingsService(harness.db)
    admission = Admission(harness.service, servers, MemberPrefs(harness.db), RULES)
    await servers.update(1, actor_id=9, allowed_channels=[77])
    assert await admission.admit(_order(static_files, quality="low")) == Refused(
        wrong_channel_text(await servers.get(1))
    )
    await servers.set_paused(1, True, actor_id=9)
    assert await admission.admit(_order(static_files, quality="low")) == Refused(SERVER_PAUSED)
    assert await harness.repo.count_open(3, 1) == (0, 0)


async def test_an_expensive_edit_asks_first_and_is_queued_once_confirmed(
    harness: Harness, admission: Admission, static_files: StaticFiles
) -> None:
    asked = await admission.admit(_order(static_files, quality="high", count=2))
    assert isinstance(asked, NeedsConfirmation)
    assert (asked.estimate.credits, asked.balance.available) == (28, 50)
    assert await harness.repo.count_open(3, 1) == (0, 0)
    confirmed = await admission.admit(replace(asked.order, confirmed=True))
    assert isinstance(confirmed, Queued)
    assert confirmed.job.credits_estimated == 28


async def test_an_edits_limits_and_credits_are_read_once_in_the_transaction_that_writes_it(
    harness: Harness, admission: Admission, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limits, the block and the balance were read by `preflight` and again by `create`: the
    question whether to ask the member is now decided from the reservation's own read."""
    reads: Counter[str] = Counter()
    for name, cls, method in (
        ("limits", JobRepository, "count_open"),
        ("blocks", QuotaRepository, "is_blocked"),
        ("credits", MemberCreditsRepository, "read"),
    ):
        monkeypatch.setattr(cls, method, _counted(reads, name, getattr(cls, method)))
    queued = await admission.admit(_order(static_files, quality="low"))
    asked = await admission.admit(_order(static_files, quality="high", count=2))
    assert isinstance(queued, Queued) and isinstance(asked, NeedsConfirmation)
    assert asked.balance.available == 50 - queued.job.credits_estimated
    assert reads == {"limits": 2, "credits": 2}  # one of each per edit (two, and a block, before)
    # The question left nothing behind (the queued edit may be over by now: a worker took it).
    assert [job.id for job in await harness.service.recent(3, 1)] == [queued.job.id]


def _counted(
    reads: Counter[str], name: str, method: Callable[..., Awaitable[T]]
) -> Callable[..., Awaitable[T]]:
    async def counted(*args: Any, **kwargs: Any) -> T:
        reads[name] += 1
        return await method(*args, **kwargs)

    return counted


async def test_an_edit_beyond_the_members_credits_is_refused_even_when_confirmed(
    harness: Harness, admission: Admission, static_files: StaticFiles
) -> None:
    decision = await admission.admit(replace(_order(static_files, quality="high", count=4), confirmed=True))
    balance = await harness.credits.balance(1, 3)
    assert decision == Refused(InsufficientCredits(56, 50, balance.refills_at).message)
    assert await harness.repo.count_open(3, 1) == (0, 0)


async def test_the_announcement_comes_only_for_an_edit_that_is_taken(
    harness: Harness, admission: Admission, static_files: StaticFiles
) -> None:
    announced: list[EditOrder] = []

    async def announce(order: EditOrder) -> EditOrder:
        announced.append(order)
        return replace(order, status_message_id=4242)

    refused = await admission.admit(_order(static_files, quality="high", count=4), announce=announce)
    assert isinstance(refused, Refused) and announced == []
    queued = await admission.admit(_order(static_files, quality="low"), announce=announce)
    assert isinstance(queued, Queued) and len(announced) == 1
    assert queued.job.status_message_id == 4242


async def test_an_admission_gives_way_to_the_acknowledgements_under_way(
    harness: Harness, admission: Admission, static_files: StaticFiles
) -> None:
    with admission.acknowledging():
        admitting = asyncio.ensure_future(admission.admit(_order(static_files, quality="low")))
        done, _ = await asyncio.wait({admitting}, timeout=0.5)
        assert not done
        assert await harness.repo.count_open(3, 1) == (0, 0)
    assert isinstance(await admitting, Queued)


async def test_an_admission_gives_way_for_a_bounded_time_only(
    admission: Admission, static_files: StaticFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission_module, "GIVE_WAY_SECONDS", 0.05)
    with admission.acknowledging():  # a stream of acknowledgements that never pauses
        assert isinstance(await admission.admit(_order(static_files, quality="low")), Queued)


async def test_an_edit_recovered_from_the_journal_meets_the_rules_and_choices_of_now(
    harness: Harness, admission: Admission, static_files: StaticFiles
) -> None:
    """Journaled before its acknowledgement, the order knows nothing the database holds: the
    server's and the member's choices are fixed into it, and its rules checked, at recovery."""
    servers = GuildSettingsService(harness.db)
    await servers.update(1, actor_id=9, nsfw_policy="spoiler", recipe=False)
    await MemberPrefs(harness.db).set_mentions(3, False, now=SYSTEM_CLOCK.now())
    job = await Admission(harness.service, servers, MemberPrefs(harness.db), RULES).readmit(
        _order(static_files, quality="low")
    )
    stored = await harness.repo.get(job.id)
    assert stored is not None
    assert (stored.options.nsfw_policy, stored.options.recipe, stored.options.mention) == (
        "spoiler",
        False,
        False,
    )
    await servers.set_paused(1, True, actor_id=9)
    with pytest.raises(NotTaken) as refused:
        await Admission(harness.service, servers, MemberPrefs(harness.db), RULES).readmit(
            _order(static_files, quality="low")
        )
    assert refused.value.message == SERVER_PAUSED
    assert await harness.repo.count_open(3, 1) == (1, 1)


async def test_a_recovered_edit_whose_cost_nobody_confirmed_is_refused_not_run(
    harness: Harness, admission: Admission, static_files: StaticFiles
) -> None:
    expensive = _order(static_files, quality="high", count=2)
    with pytest.raises(NotTaken) as refused:
        await admission.readmit(expensive)
    assert refused.value.message == NOT_CONFIRMED.format(credits=28)
    assert await harness.repo.count_open(3, 1) == (0, 0)
    job = await admission.readmit(replace(expensive, confirmed=True))
    assert job.credits_estimated == 28
