"""Whether, and how, an edit is taken: one decision for every way an edit starts (a command, a
form, a button, the painter's page).

`admit(order)` answers `Queued`, `NeedsConfirmation`, `Refused(reason)` or `HandedOn`; `readmit`
decides the same for an edit a restart found in the journal. It owns the rules
that used to be spread over the Discord side: the options a member left to the server, the
owner's and the moderators' switches (pause, DMs, own installs, channels), the confirmation
rule, and which sizes an edit may be upscaled to. The Discord side only parses, acknowledges
and renders the answer.

Discord allows 3 seconds for an acknowledgement and the database can be slower than that under
a burst, so the checks come in two steps: `early` needs nothing from the database and is asked
before the acknowledgement; `admit` reads the server, the member and their credits after it.
And `admit` waits while acknowledgements are under way (`acknowledging`): in a burst, the edits
acknowledged first would otherwise spend the event loop on their database round trips while the
later ones still wait for their first answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, replace

from bot.credits import Balance, ConfirmFirst, CreditError, Estimate
from bot.edits import PAUSED, EditOptions, EditOrder, EditsPaused, NotTaken, TooManyJobs
from bot.jobs.journal import HandedOn
from bot.jobs.service import JobService
from bot.pictures.sizes import RESOLUTIONS, SIZE_NAMES
from bot.pictures.validation import prompt_problem
from bot.runtime.config import Settings
from bot.runtime.guilds import GuildSettingsService, ServerSettings
from storage.jobs import Job
from storage.members import MemberPrefs

NOT_IN_DMS = "Editing in direct messages is turned off on this bot; use /edit in a server channel."
PERSONAL_OFF = "Using Retouch from your own account is turned off on this bot; use it in a server that has added Retouch."
SERVER_PAUSED = "Editing is paused on this server by its moderators; try again later."
NO_LONGER_MADE = "This bot's image host cannot make that size any more; pick another."
NOT_CONFIRMED = (
    "Retouch restarted before this edit started, and it costs {credits} credits, so it needs your "
    "confirmation: run it again."
)
# The size every edit gets unless a size is asked for: the shape of the picture itself.
SAME_SHAPE = "auto"
STANDARD_RESOLUTION = "1K"
# Seconds an admission gives way to acknowledgements at most: under a steady stream of them,
# edits already acknowledged must still be taken.
GIVE_WAY_SECONDS = 1.0


@dataclass(frozen=True)
class AdmissionRules:
    """The owner's part of the decision, read once from the configuration."""

    default_quality: str = "high"
    confirm_above: int = 20
    allow_dms: bool = False
    personal_allowed: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AdmissionRules:
        return cls(
            default_quality=settings.editing.default_quality,
            confirm_above=settings.credits.confirm_above,
            allow_dms=settings.editing.allow_dms,
            personal_allowed=settings.credits.personal_allowance > 0,
        )


@dataclass(frozen=True)
class Wishes:
    """What the member chose; None leaves it to the server's default, then the bot's."""

    quality: str | None = None
    count: int | None = None
    image_size: str | None = None
    resolution: str | None = None
    output_format: str = "png"
    private: bool = False


@dataclass(frozen=True)
class Queued:
    job: Job


@dataclass(frozen=True)
class NeedsConfirmation:
    """The edit costs more than the server's threshold, or more than half of what the member
    has left: nothing was written; the member confirms the order and it is admitted again."""

    order: EditOrder
    estimate: Estimate
    balance: Balance


@dataclass(frozen=True)
class Refused:
    reason: str


# Or `HandedOn`: another process took the acknowledged edit over (this one's lease on it had
# lapsed) and wrote it first; that process runs it and answers the member, this one says nothing.
Decision = Queued | NeedsConfirmation | Refused | HandedOn
# Called once the edit passed every check and before its job is written: the painter's page posts
# the message that will show progress here, so a refused edit never shows one.
Announce = Callable[[EditOrder], Awaitable[EditOrder]]
# Given the member's balance, whether they must confirm the cost first.
AskFirst = Callable[[Balance], bool]


def closed_where(rules: AdmissionRules, guild_id: int | None, *, personal: bool) -> str | None:
    """Why the owner has turned editing off where the member is: through members' own installs,
    or in DMs with the bot."""
    if personal:
        return None if rules.personal_allowed else PERSONAL_OFF
    return NOT_IN_DMS if guild_id is None and not rules.allow_dms else None


def wrong_channel_text(server: ServerSettings) -> str:
    channels = ", ".join(f"<#{channel}>" for channel in server.allowed_channels[:5])
    return f"Editing is not allowed in this channel; use {channels}."


def server_refusal(server: ServerSettings, channel_id: int | None) -> str | None:
    """Why the server's moderators do not allow an edit here now: a pause, or the channel."""
    if server.paused:
        return SERVER_PAUSED
    if not server.allows_channel(channel_id):
        return wrong_channel_text(server)
    return None


def needs_confirmation(
    rules: AdmissionRules, server: ServerSettings, estimate: Estimate, balance: Balance
) -> bool:
    threshold = server.confirm_above if server.confirm_above is not None else rules.confirm_above
    return estimate.credits > threshold or estimate.credits * 2 > balance.available


def size_problem(shape: str, offered: Collection[str]) -> str:
    """Why a size choice is refused: the configured hosts take only presets, and this one is
    under the model's minimum there (fal's `square` is 512x512, its 16:9 ones 1024x576)."""
    names = [f"“{SIZE_NAMES[name]}”" for name in SIZE_NAMES if name in offered]
    choices = " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f"This bot's image host cannot make the “{SIZE_NAMES[shape]}” size; pick {choices}."


def resolution_problem(resolution: str, offered: Collection[str]) -> str:
    return f"This bot's image host cannot make {resolution} images; pick {' or '.join(sorted(offered))}."


def options_for(
    wishes: Wishes,
    server: ServerSettings,
    rules: AdmissionRules,
    *,
    sizes: Collection[str],
    resolutions: Collection[str],
) -> EditOptions | Refused:
    """The member's choices with the server's defaults, then the bot's, filled in; refused when
    no configured host can make the size or resolution."""
    resolution = wishes.resolution or STANDARD_RESOLUTION
    if resolution not in resolutions:
        return Refused(resolution_problem(resolution, resolutions))
    shape = wishes.image_size or server.default_size or SAME_SHAPE
    if shape not in sizes:
        return Refused(size_problem(shape, sizes))
    return EditOptions(
        quality=wishes.quality or server.default_quality or rules.default_quality,
        image_size=shape,
        resolution=resolution,
        count=wishes.count or server.default_count or 1,
        output_format=wishes.output_format,
        private=wishes.private,
    )


def upscale_sizes(resolution: str, offered: Collection[str]) -> list[str]:
    """The sizes larger than an edit's own that the bot's hosts can make, smallest first."""
    current = RESOLUTIONS.index(resolution)
    return [size for size in RESOLUTIONS[current + 1 :] if size in offered]


def _upscaled(parent: Job, size: str) -> EditOptions:
    """One image of the parent at a larger size, in its own shape."""
    return replace(parent.options, resolution=size, count=1, image_size=SAME_SHAPE)


class Admission:
    def __init__(
        self, jobs: JobService, servers: GuildSettingsService, prefs: MemberPrefs, rules: AdmissionRules
    ) -> None:
        self._jobs = jobs
        self._servers = servers
        self._prefs = prefs
        self.rules = rules
        self._acknowledging = 0
        self._no_acknowledgement = asyncio.Event()
        self._no_acknowledgement.set()

    @contextlib.contextmanager
    def acknowledging(self) -> Iterator[None]:
        """Around an edit's acknowledgement: admissions give way until none is under way."""
        self._acknowledging += 1
        self._no_acknowledgement.clear()
        try:
            yield
        finally:
            self._acknowledging -= 1
            if not self._acknowledging:
                self._no_acknowledgement.set()

    async def _give_way(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GIVE_WAY_SECONDS):
                await self._no_acknowledgement.wait()

    def early(self, prompt: str, guild_id: int | None, *, personal: bool) -> str | None:
        """Why an edit is refused before anything is read from the database: the prompt, editing
        closed where the member is, the bot not taking edits."""
        problem = prompt_problem(prompt) or self.closed(guild_id, personal=personal)
        if problem is None and (not self._jobs.accepting or self._jobs.paused):
            problem = PAUSED
        return problem

    def closed(self, guild_id: int | None, *, personal: bool) -> str | None:
        return closed_where(self.rules, guild_id, personal=personal)

    async def options(self, guild_id: int | None, wishes: Wishes) -> EditOptions | Refused:
        return options_for(
            wishes,
            await self._servers.get(guild_id),
            self.rules,
            sizes=self._jobs.image_sizes,
            resolutions=self._jobs.resolutions,
        )

    def upscale_offers(self, job: Job) -> dict[str, Estimate]:
        """Each size larger than the job's own that the bot's hosts can make, smallest first,
        with what one image at that size costs; empty when the job cannot be upscaled here."""
        return {
            size: self._jobs.estimate(_upscaled(job, size))
            for size in upscale_sizes(job.options.resolution, self._jobs.resolutions)
        }

    def upscaled(self, parent: Job, size: str) -> EditOptions | Refused:
        """The options of an Upscale of `parent` to `size`; refused when no configured host makes
        that size (any more)."""
        if size not in self.upscale_offers(parent):
            return Refused(NO_LONGER_MADE)
        return _upscaled(parent, size)

    async def _chosen(self, order: EditOrder, server: ServerSettings) -> EditOrder:
        """The order with the server's NSFW policy and recipe choice and the member's /notify
        choice fixed into it, as they are now."""
        options = replace(
            order.options,
            nsfw_policy=server.nsfw_policy,
            recipe=server.recipe,
            mention=await self._prefs.mentions(order.user_id),
        )
        return replace(order, options=options)

    def _ask_first(self, order: EditOrder, server: ServerSettings, estimate: Estimate) -> AskFirst | None:
        """Whether to ask before writing, decided in the transaction that writes the job from the
        balance its reservation reads (asked before, the limits and credits were read twice)."""
        if order.confirmed:
            return None
        return functools.partial(needs_confirmation, self.rules, server, estimate)

    async def admit(self, order: EditOrder, *, announce: Announce | None = None) -> Decision:
        """Decide the edit and, when it is taken, write it with its credit hold and put it in line.

        The server's and the member's choices are fixed into the order here (`_chosen`), as
        they are when it is asked. An order that is not queued is taken out of the journal, so
        recovery never starts it. Waits first while other edits are being acknowledged (at most
        `GIVE_WAY_SECONDS`).
        """
        await self._give_way()
        jobs = self._jobs
        server = await self._servers.get(order.guild_id)
        order = await self._chosen(order, server)
        estimate = jobs.estimate(order.options)
        refusal = server_refusal(server, order.channel_id)
        if refusal is not None:
            return await self._refuse(order, refusal)
        try:
            if announce is not None:
                # Refusals, and the question, come before the announcement.
                balance = await jobs.preflight(order, estimate)
                if not order.confirmed and needs_confirmation(self.rules, server, estimate, balance):
                    raise ConfirmFirst(balance)
                order = replace(await announce(order), confirmed=True)
            job = await jobs.create(order, estimate, ask_first=self._ask_first(order, server, estimate))
        except ConfirmFirst as first:
            await jobs.unnote(order)  # nothing may start before the member confirms
            return NeedsConfirmation(order, estimate, first.balance)
        except (EditsPaused, TooManyJobs, CreditError) as error:
            return await self._refuse(order, error.message)
        except HandedOn as handed_on:
            return handed_on
        return Queued(await jobs.enqueue(job, order.status_message_id))

    async def readmit(self, order: EditOrder) -> Job:
        """Write the job of an edit acknowledged just before its process stopped (recovery found
        it in the journal), decided as `admit` decides a live one: the server's rules and the
        server's and member's choices as they are now.

        Nobody is there to answer a question, so an edit whose cost the member has not confirmed
        and would be asked about is refused. Raises NotTaken, TooManyJobs, CreditError or
        HandedOn; recovery takes a refused edit out of the journal and tells the member.
        """
        server = await self._servers.get(order.guild_id)
        order = await self._chosen(order, server)
        refusal = server_refusal(server, order.channel_id)
        if refusal is not None:
            raise NotTaken(refusal)
        estimate = self._jobs.estimate(order.options)
        try:
            return await self._jobs.record(
                order, estimate, ask_first=self._ask_first(order, server, estimate)
            )
        except ConfirmFirst:
            raise NotTaken(NOT_CONFIRMED.format(credits=estimate.credits)) from None

    async def _refuse(self, order: EditOrder, reason: str) -> Refused:
        await self._jobs.unnote(order)
        return Refused(reason)
