"""The one door to the job service, for the Discord side, the web server and the CLI.

It builds the parts around one shared `Core`, owns their background tasks, and names which part
answers each call; the parts know nothing of one another beyond what they are handed here.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from bot.credits import CreditService
from bot.edits import Delivery
from bot.jobs.core import Core
from bot.jobs.endings import Endings
from bot.jobs.inputs import InputPreparer
from bot.jobs.intake import Intake
from bot.jobs.journal import IntakeJournal, Journal
from bot.jobs.leases import Leases
from bot.jobs.places import Places
from bot.jobs.queries import Queries
from bot.jobs.queue import Line
from bot.jobs.recovery import Readmit, Recovery
from bot.jobs.results import Results
from bot.jobs.retention import Retention
from bot.jobs.runner import Runner
from bot.jobs.settings import JobSettings
from bot.jobs.table_journal import TableJournal
from bot.jobs.wakeups import JOBS, RUNS, SWITCHES, Listener, wakeups_for
from bot.pictures.files import FileStore
from bot.pictures.links import FileLinks
from bot.providers.base import Provider
from bot.runtime.clock import SYSTEM_CLOCK, Clock
from bot.runtime.metrics import Metrics
from bot.runtime.tasks import Supervisor
from storage.bot_settings import BotSettingsRepository
from storage.claims import ClaimRepository
from storage.db import database_errors
from storage.intake_journal import IntakeJournalRepository
from storage.jobs import JobRepository
from storage.postgres import PostgresDatabase

log = logging.getLogger(__name__)

# How long a stop waits for submits already at a host to be answered (compose.yaml gives a stop
# 30 s before SIGKILL; Docker's own default is 10 s).
SUBMIT_GRACE = 8.0


class JobService:
    def __init__(
        self,
        settings: JobSettings,
        *,
        repo: JobRepository,
        provider: Provider,
        credits: CreditService,
        files: FileStore,
        session: aiohttp.ClientSession,
        metrics: Metrics | None = None,
        links: FileLinks | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        metrics = metrics or Metrics()
        claims = ClaimRepository(repo.database)
        # Processes sharing PostgreSQL journal in it, where another process finds what a dead
        # one acknowledged; the embedded SQLite store, one process per file, beside it on disk.
        rows = IntakeJournalRepository(repo.database) if isinstance(repo.database, PostgresDatabase) else None
        leases = Leases(
            claims,
            owner=settings.lease_owner,
            seconds=settings.lease_seconds,
            clock=clock,
            metrics=metrics,
            journal=rows,
        )
        journal: IntakeJournal | None = None
        if rows is not None:
            journal = TableJournal(rows, leases)
        elif settings.journal_path is not None:
            journal = Journal(settings.journal_path, clock)
        core = Core(
            settings=settings,
            repo=repo,
            provider=provider,
            credits=credits,
            files=files,
            metrics=metrics,
            journal=journal,
            clock=clock,
            leases=leases,
            # Across every process sharing the database, no more edits at the hosts at once
            # than one process's workers (the sum of the hosts' `max_concurrency`).
            line=Line(claims, leases, metrics, max_in_flight=settings.concurrency),
            # Shared with every process on a PostgreSQL database, within this one on SQLite.
            wakeups=wakeups_for(repo.database),
        )
        inputs = InputPreparer(
            files=files, session=session, cdn_hosts=settings.cdn_hosts, links=links, clock=clock
        )
        endings = Endings(core)
        self._tasks = Supervisor()
        places = Places(core, self._tasks)
        intake = Intake(core, places)
        runner = Runner(core, endings, inputs, Results(core, endings, inputs, session), places)
        queries = Queries(repo, endings.wait_settled)
        self._core = core
        self._intake = intake
        self._runner = runner
        self._retention = Retention(core)
        self._recovery = Recovery(core, intake, runner, endings, self._tasks)
        self._listening = False
        self._switches = BotSettingsRepository(repo.database)
        self._reading: set[asyncio.Future[None]] = set()
        self._settings_listeners: list[Listener] = []

        # Taking an edit in (see `Intake` for the order the Discord side calls these in).
        self.estimate = intake.estimate
        self.note = intake.note
        self.unnote = intake.unnote
        self.preflight = intake.preflight
        self.create = intake.create
        self.record = intake.record
        self.enqueue = intake.enqueue
        self.submit = intake.submit
        # A host saying a run changed, ahead of the next poll.
        self.run_update = runner.run_update
        # Ending one early, and waiting for the end.
        self.cancel = endings.cancel
        self.delete = endings.delete
        self.wait_settled = endings.wait_settled
        # Reading.
        self.get = queries.get
        self.acting_on = queries.acting_on
        self.showing = queries.showing
        self.recent = queries.recent
        self.outputs = queries.outputs
        self.kept_outputs = queries.kept_outputs
        self.chain = queries.chain
        self.load = queries.load

    @property
    def resolutions(self) -> frozenset[str]:
        """The resolutions some configured host can make, so 2K/4K are offered only where real."""
        return self._core.provider.resolutions

    @property
    def image_sizes(self) -> frozenset[str]:
        """The size choices some configured host makes within the model's limits."""
        return self._core.provider.image_sizes

    @property
    def accepting(self) -> bool:
        """Started and not stopping: false before recovery has run and from the start of `stop`."""
        return self._intake.accepting

    @property
    def paused(self) -> bool:
        """The owner's switch for every server at once; running edits still finish."""
        return self._intake.paused

    async def pause_everywhere(self, paused: bool, *, actor_id: int) -> None:
        """Flip the owner's switch for every process sharing the database, and for good: each
        hears of it (`SWITCHES`) and reads it again, and a process starting reads it first."""
        await self._switches.set_paused(paused, actor_id=actor_id, now=self._core.clock.now())
        self._intake.paused = paused
        await self._core.wakeups.notify(SWITCHES)

    async def settings_changed(self, guild_id: int) -> None:
        """A server's moderators changed its settings here: every process forgets its copy."""
        await self._core.wakeups.notify(SWITCHES, str(guild_id))

    def on_settings_changed(self, listener: Listener) -> None:
        """Call `listener` with the server's id whenever its settings change in any process, and
        with "" when the owner's switches changed or notices were lost (forget every server)."""
        self._settings_listeners.append(listener)

    def _switched(self, payload: str = "") -> None:
        """Settings changed somewhere (or notices were lost): the owner's switches are read
        again unless only a server's changed, and the listeners hear of it."""
        if not payload:
            reading = asyncio.ensure_future(self._read_switches())
            self._reading.add(reading)
            reading.add_done_callback(self._reading.discard)
        for listener in self._settings_listeners:
            listener(payload)

    async def _read_switches(self) -> None:
        try:
            self._intake.paused = await self._switches.paused()
        except database_errors():
            log.exception("could not read the owner's switches; the next notice reads them again")

    async def start(self, delivery: Delivery, readmit: Readmit | None = None) -> None:
        """Recover what a previous process left, then begin serving the line.

        `readmit` writes the job of an edit found in a journal, by the rules a live edit meets
        (`Admission.readmit`); without it such an edit is written as it was journaled.
        """
        core = self._core
        core.started_with = delivery
        if readmit is not None:
            self._recovery.readmit = readmit
        if not self._listening:
            await core.wakeups.listen(JOBS, core.line.wake)
            await core.wakeups.listen(RUNS, self._runner.wake_run)
            await core.wakeups.listen(SWITCHES, self._switched)
            self._listening = True
        self._intake.paused = await self._switches.paused()
        await self._recovery.recover(starting=True)
        for n in range(core.settings.concurrency):
            self._tasks.spawn(self._runner.work(), name=f"job-worker-{n}")
        self._tasks.spawn(core.leases.keep_renewing(), name="renew-leases")
        self._tasks.spawn(self._recovery.keep_taking_over(), name="take-over")
        self._tasks.spawn(self._retention.keep_pruning(), name="prune-files")
        self._intake.accepting = True

    async def stop(self) -> None:
        """Stop taking edits and drop the workers; unfinished jobs stay in the database, handed
        back so that another process (or this one's next start) finishes them at once."""
        self._intake.accepting = False
        await self._tasks.stop()
        await self._runner.land(within=SUBMIT_GRACE)
        try:
            await self._core.leases.release_all()
        except database_errors():
            log.warning("could not hand back this process's jobs; their leases lapse on their own")
        await self._core.wakeups.close()
        self._listening = False

    async def recover(self) -> None:
        """Put every unfinished job back on its path; safe to run any number of times."""
        await self._recovery.recover()
