"""Taking an edit in: price it, refuse what can be refused early, journal it, write it and its
credit reservation together (held out of line by this process), and put it in line.

The steps are separate calls because the Discord side interleaves them with its own: an edit
is journaled before it is acknowledged, checked and written in one transaction (`create`,
which also decides whether the member must confirm it first; `preflight` checks alone, for an
edit announced before it is written), and put in line (`enqueue`) only once its progress
message exists to be updated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from bot.credits import Balance, Estimate, InsufficientCredits, MemberBlocked
from bot.edits import (
    TOKEN_LIFETIME,
    CannotRecord,
    EditOptions,
    EditOrder,
    EditsPaused,
    TooManyJobs,
)
from bot.jobs import access
from bot.jobs.access import Actor
from bot.jobs.core import Core
from bot.jobs.places import Places
from bot.jobs.wakeups import JOBS
from storage.db import database_errors
from storage.jobs import Job, NewJob

log = logging.getLogger(__name__)

# How long the journal may take before the acknowledgement: Discord allows 3 seconds from the
# interaction's creation, and reading it and its inputs came first.
NOTE_DEADLINE = 2.0
_STORE_FAILURES: tuple[type[BaseException], ...] = (OSError, *database_errors())
_NOT_RECORDED: tuple[type[BaseException], ...] = (TimeoutError, *_STORE_FAILURES)


class Intake:
    def __init__(self, core: Core, places: Places) -> None:
        self._core = core
        self._places = places
        self.accepting = False
        # The owner's switch for every server at once; running edits still finish.
        self.paused = False
        # Journal entries refused for lateness, to withdraw once they land (held: the loop keeps
        # only weak references to tasks).
        self._late: set[asyncio.Task[None]] = set()

    def estimate(self, options: EditOptions) -> Estimate:
        """What an edit with these options costs, priced at the first host's rates."""
        return self._core.credits.estimate(
            quality=options.quality,
            resolution=options.resolution,
            count=options.count,
            usd_per_image=self._core.settings.usd_per_image,
        )

    async def preflight(self, order: EditOrder, estimate: Estimate) -> Balance:
        """Every refusal that can be known before the job exists, so it can be answered privately.

        Raises EditsPaused, TooManyJobs or a CreditError; returns the member's balance, which
        the caller uses to decide whether to ask for confirmation.
        """
        if not self.accepting or self.paused:
            raise EditsPaused
        await self.check_limits(order.user_id, order.guild_id)
        credits = self._core.credits
        if await credits.is_blocked(order.credit_guild, order.user_id):
            raise MemberBlocked
        balance = await credits.balance(order.credit_guild, order.user_id, order.role_ids)
        if estimate.credits > balance.available:
            raise InsufficientCredits(estimate.credits, balance.available, balance.refills_at)
        return balance

    async def submit(self, order: EditOrder, estimate: Estimate) -> Job:
        """`create` then `enqueue`, for callers with no Discord message to wait for."""
        job = await self.create(order, estimate)
        return await self.enqueue(job, order.status_message_id)

    async def note(self, order: EditOrder) -> EditOrder:
        """Stamp an edit about to be acknowledged with the time and journal it, so a crash
        before its row still runs it; the stamped order is the one to write.

        The stamp is the job's `created_at`: on PostgreSQL one member's edits are written
        concurrently, in any order, and the line serves each member's edits in the order they
        were acknowledged, not in the order their rows went in.

        Raises CannotRecord when the journal does not answer within NOTE_DEADLINE, while the
        member can still be told so (a stalled disk or an unreachable database would otherwise
        outlast Discord's deadline and leave the member with "The application did not
        respond"). An entry that lands after that is withdrawn as soon as it does, so no
        process ever runs an edit its member was told was refused.
        """
        order = replace(order, acked_at=self._core.clock.now())
        journal = self._core.journal
        if journal is None:
            return order
        adding = asyncio.ensure_future(journal.add(order))
        try:
            await asyncio.wait_for(asyncio.shield(adding), NOTE_DEADLINE)
        except _NOT_RECORDED as error:
            log.error("an edit could not be journaled before its acknowledgement: %r", error)
            if not adding.done():
                late = asyncio.create_task(self._withdraw_late(adding, order))
                self._late.add(late)
                late.add_done_callback(self._late.discard)
            raise CannotRecord from error
        return order

    async def _withdraw_late(self, adding: asyncio.Future[None], order: EditOrder) -> None:
        try:
            await adding
            await self.unnote(order)
            log.info("a journal entry that landed after its edit was refused is withdrawn")
        except _STORE_FAILURES:
            pass  # it never landed

    async def unnote(self, order: EditOrder) -> None:
        """The journaled edit ended without a job; recovery must leave it alone."""
        if self._core.journal is not None:
            await self._core.journal.withdraw(order)

    async def create(
        self, order: EditOrder, estimate: Estimate, *, ask_first: Callable[[Balance], bool] | None = None
    ) -> Job:
        """Check the in-flight limits, write the job row and reserve its credits in one
        transaction, not yet in line.

        A crash after this finds the job at start and runs it (before it, the journal does). If
        the limits or the reservation refuse it (TooManyJobs, a CreditError), or the member must
        confirm it first (`ask_first`, ConfirmFirst), the row is rolled back with it and nothing
        is left behind. HandedOn: another process wrote it first.
        """
        if not self.accepting or self.paused:
            raise EditsPaused
        return await self.record(order, estimate, ask_first=ask_first)

    async def record(
        self, order: EditOrder, estimate: Estimate, *, ask_first: Callable[[Balance], bool] | None = None
    ) -> Job:
        """`create` whether or not edits are being taken: recovery records the edits that were
        acknowledged before a restart, before the service opens again."""
        repo = self._core.repo
        parent = None if order.parent_id is None else await repo.get(order.parent_id)
        if order.parent_id is not None and (
            parent is None or not access.visible(parent, Actor(order.user_id, order.guild_id))
        ):
            # "Edit image" on a result posted before this database existed names a job it never had;
            # and a chain never links to an edit its member could not see.
            order = replace(order, parent_id=None, parent_output=None)
        async with repo.transaction() as tx:
            # Counted under the member's and the server's locks with the insert: counted before
            # it, a burst of simultaneous edits all saw room for one more and all went in. (On
            # SQLite the write lock already serialises; on PostgreSQL these hold across processes.)
            if self._core.journal is not None:
                # First, so a process that took the edit over from the journal and writes it
                # too waits here for this transaction, then finds the edit gone (`HandedOn`).
                await self._core.journal.settle(order)
            await tx.lock(f"open-jobs:member:{order.user_id}")
            if order.guild_id is not None:
                await tx.lock(f"open-jobs:server:{order.guild_id}")
            await self.check_limits(order.user_id, order.guild_id)
            job = await self._insert(order, estimate)
            await self._core.credits.reserve(
                guild_id=order.credit_guild,
                user_id=order.user_id,
                role_ids=order.role_ids,
                job_id=job.id,
                estimate=estimate,
                ask_first=ask_first,
            )
        return job

    async def enqueue(self, job: Job, status_message_id: int | None) -> Job:
        """Put a created job in line once its progress message exists and wake a worker; its
        place is told beside it (`Places`)."""
        core = self._core
        if status_message_id is not None and status_message_id != job.status_message_id:
            await core.repo.set_status_message(job.id, status_message_id)
            job = replace(job, status_message_id=status_message_id)
        await core.leases.release(job.id)
        log.info("job %d queued for user %d in guild %s", job.id, job.user_id, job.guild_id)
        await core.wakeups.notify(JOBS)
        self._places.joined(job)
        return job

    async def _insert(self, order: EditOrder, estimate: Estimate) -> Job:
        return await self._core.repo.insert(
            NewJob(
                guild_id=order.guild_id,
                channel_id=order.channel_id,
                user_id=order.user_id,
                prompt=order.prompt,
                options=order.options,
                inputs=[image.to_dict() for image in order.images],
                mask=order.mask.to_dict() if order.mask is not None else None,
                kind=order.kind,
                parent_id=order.parent_id,
                parent_output=order.parent_output,
                application_id=order.application_id,
                interaction_token=order.interaction_token,
                status_message_id=order.status_message_id,
                # From the acknowledgement: recovery writes a journaled edit minutes after it.
                token_expires_at=(
                    order.token_expires_at or (order.acked_at or self._core.clock.now()) + TOKEN_LIFETIME
                )
                if order.interaction_token
                else None,
                credits_estimated=estimate.credits,
                usd_reserved_micros=estimate.usd_micros,
                created_at=order.acked_at,
                # Out of line until `enqueue`; if this process dies first, its lease lapses.
                lease_owner=self._core.leases.owner,
                lease_until=self._core.leases.until(),
            )
        )

    async def check_limits(self, user_id: int, guild_id: int | None) -> None:
        """Raise TooManyJobs when the member or the server has no room for another edit.

        Outside a transaction this is only an early answer (`preflight`); `record` asks again
        under the write lock, where the answer holds until the job row is in.
        """
        member_open, server_open = await self._core.repo.count_open(user_id, guild_id)
        settings = self._core.settings
        if member_open >= settings.max_per_member:
            raise TooManyJobs("member", settings.max_per_member)
        if guild_id is not None and server_open >= settings.max_per_server:
            raise TooManyJobs("server", settings.max_per_server)
