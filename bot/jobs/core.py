"""What every part of the job service shares: the stores it writes, the host it edits at, the
line of waiting jobs with this process's leases on them, the wake-ups, the clock, and the
Discord side once the service has started.

The parts (intake, runner, recovery, retention, queries) each hold this one value rather than
copies of its fields, so a part built before `start` still sees the delivery `start` sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.credits import CreditService
from bot.edits import Delivery
from bot.jobs.journal import IntakeJournal
from bot.jobs.leases import Leases
from bot.jobs.queue import Line
from bot.jobs.settings import JobSettings
from bot.jobs.wakeups import Wakeups
from bot.pictures.files import FileStore
from bot.providers.base import Provider
from bot.runtime.clock import Clock
from bot.runtime.metrics import Metrics
from storage.jobs import JobRepository


@dataclass(eq=False, kw_only=True)
class Core:
    settings: JobSettings
    repo: JobRepository
    provider: Provider
    credits: CreditService
    files: FileStore
    metrics: Metrics
    journal: IntakeJournal | None
    clock: Clock
    leases: Leases
    line: Line
    wakeups: Wakeups
    started_with: Delivery | None = None

    @property
    def delivery(self) -> Delivery:
        if self.started_with is None:
            raise RuntimeError("JobService.start() was not called")
        return self.started_with
