"""What every reliability test shares: reading the bot's database, judging an edit's end, counting.

The judge looks only at what a member and an auditor can see: the messages in the fake
Discord and the rows in the bot's store, read from the test process (never through the bot;
see `store.py`). An edit ends well in exactly one of two ways:

- delivered: state `done`, exactly one message carries its images (files named
  `retouch-<job>-<n>.<ext>`), with as many images as the host produced, and the ledger's
  reserve + release = capture = −(price per image × images delivered);
- refunded and told: state `failed`, `cancelled` or `refunded`, no result anywhere, no capture,
  reserve + release = 0, and a message with "❌" quoting the prompt (a cancel is told by the
  Cancel button's own answer).

Anything else is a problem, filed under one of the figures the issue asks for: credits lost,
double charges, results lost, duplicate results, members not told, jobs stuck.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.credits import CreditService
from bot.runtime.config import BudgetSettings, CreditsSettings
from storage.store import open_db
from tests.fakes.discord import FakeDiscord
from tests.reliability.store import Store, read_rows

T = TypeVar("T")
JSON = dict[str, Any]

FINAL_STATES = frozenset({"done", "failed", "cancelled", "refunded"})
ALLOWANCE = 1000
"""Every member's allowance in these tests; with period "none" it never refills mid-run."""
BASE_ENV = {
    "RETOUCH_CREDITS__DEFAULT_ALLOWANCE": str(ALLOWANCE),
    "RETOUCH_CREDITS__PERIOD": "none",
}

# Problem categories, each a figure of the report that must stay at zero outside known bugs.
CREDITS_LOST = "credits lost"
DOUBLE_CHARGE = "double charge"
RESULT_LOST = "result lost"
DUPLICATE_RESULT = "duplicate result"
NOT_TOLD = "member not told"
STUCK = "job stuck"
LEDGER = "ledger broken"
UNEXPECTED_END = "unexpected end"
REQUEST_DROPPED = "request dropped"
CATEGORIES = (
    CREDITS_LOST,
    DOUBLE_CHARGE,
    RESULT_LOST,
    DUPLICATE_RESULT,
    NOT_TOLD,
    STUCK,
    LEDGER,
    UNEXPECTED_END,
    REQUEST_DROPPED,
)


# ---------------------------------------------------------------------------------------------- figures


@dataclass
class Tally:
    """The figures the reliability report prints at the end of the session."""

    crash_runs: int = 0
    restarts: int = 0
    fault_scenarios: int = 0
    faults_fired: int = 0
    jobs_judged: int = 0
    host_runs_orphaned: int = 0
    problems: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    known_bug_problems: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    seconds: dict[str, float] = field(default_factory=dict)

    def record(self, problems: Iterable[Problem], *, known_bug: bool) -> None:
        target = self.known_bug_problems if known_bug else self.problems
        for problem in problems:
            target[problem.category] += 1

    def counts(self) -> dict[str, int]:
        """Every count, flat (problems by category): what one test adds, carried from a test
        process to the one that prints the report (`tests/reliability/conftest.py`)."""
        flat = {name: getattr(self, name) for name in _COUNTS}
        flat.update({f"problem:{name}": count for name, count in self.problems.items()})
        flat.update({f"known:{name}": count for name, count in self.known_bug_problems.items()})
        return flat

    def add(self, counts: dict[str, int]) -> None:
        for name, count in counts.items():
            kind, _, category = name.partition(":")
            if kind == "problem":
                self.problems[category] += count
            elif kind == "known":
                self.known_bug_problems[category] += count
            else:
                setattr(self, name, getattr(self, name) + count)

    def as_dict(self) -> JSON:
        return {
            "crash_runs": self.crash_runs,
            "restarts": self.restarts,
            "fault_scenarios": self.fault_scenarios,
            "faults_fired": self.faults_fired,
            "jobs_judged": self.jobs_judged,
            "host_runs_orphaned": self.host_runs_orphaned,
            "problems": self.problems,
            "problems_in_known_bug_tests": self.known_bug_problems,
            "seconds": {name: round(value, 1) for name, value in self.seconds.items()},
        }


_COUNTS = ("crash_runs", "restarts", "fault_scenarios", "faults_fired", "jobs_judged", "host_runs_orphaned")
TALLY = Tally()


# ---------------------------------------------------------------------------------------------- the database


@dataclass(frozen=True)
class JobFacts:
    """One job as the database has it, with its ledger entries summed (all amounts positive)."""

    id: int
    state: str
    user_id: int
    guild_id: int | None
    prompt: str
    kind: str
    parent_id: int | None
    run_id: str | None
    status_message_id: int | None
    result_message_id: int | None
    outputs: int
    images_held: int
    reserves: int
    captures: int
    releases: int
    reserved: int
    captured: int
    released: int

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def price_per_image(self) -> int:
        return self.reserved // self.images_held if self.images_held else 0


def read_jobs(store: Store) -> dict[int, JobFacts]:
    """Every job with its ledger, or nothing before the bot has created the database."""
    rows = read_rows(
        store,
        """
        SELECT j.*,
          (SELECT COUNT(*) FROM job_outputs o WHERE o.job_id = j.id) AS n_outputs,
          (SELECT images FROM credit_holds h WHERE h.job_id = j.id) AS images_held,
          (SELECT COUNT(*) FROM ledger l WHERE l.job_id = j.id AND l.kind = 'reserve') AS reserves,
          (SELECT COUNT(*) FROM ledger l WHERE l.job_id = j.id AND l.kind = 'capture') AS captures,
          (SELECT COUNT(*) FROM ledger l WHERE l.job_id = j.id AND l.kind = 'release') AS releases,
          (SELECT COALESCE(-SUM(amount), 0) FROM ledger l
             WHERE l.job_id = j.id AND l.kind = 'reserve') AS reserved,
          (SELECT COALESCE(-SUM(amount), 0) FROM ledger l
             WHERE l.job_id = j.id AND l.kind = 'capture') AS captured,
          (SELECT COALESCE(SUM(amount), 0) FROM ledger l
             WHERE l.job_id = j.id AND l.kind = 'release') AS released
        FROM jobs j ORDER BY j.id
        """,
    )
    if rows is None:
        return {}
    return {
        row["id"]: JobFacts(
            id=row["id"],
            state=row["state"],
            user_id=row["user_id"],
            guild_id=row["guild_id"],
            prompt=row["prompt"],
            kind=row["kind"],
            parent_id=row["parent_id"],
            run_id=row["run_id"],
            status_message_id=row["status_message_id"],
            result_message_id=row["result_message_id"],
            outputs=row["n_outputs"],
            images_held=row["images_held"] or 0,
            reserves=row["reserves"],
            captures=row["captures"],
            releases=row["releases"],
            reserved=row["reserved"],
            captured=row["captured"],
            released=row["released"],
        )
        for row in rows
    }


async def ledger_problems(
    store: Store, members: Iterable[tuple[int, int]], charged: dict[int, int]
) -> list[str]:
    """`CreditService.verify()` on the bot's own store, plus each member's balance against the
    allowance minus what their delivered edits were charged (`charged` by user id)."""
    db = await open_db(store)
    try:
        service = CreditService(
            db, CreditsSettings(default_allowance=ALLOWANCE, period="none"), BudgetSettings()
        )
        problems = list(await service.verify())
        for guild_id, user_id in members:
            balance = await service.balance(guild_id, user_id)
            expected = ALLOWANCE - charged.get(user_id, 0)
            if balance.available != expected or balance.reserved:
                problems.append(
                    f"member {user_id}: {balance.available} available and {balance.reserved} held, "
                    f"expected {expected} and none held"
                )
        return problems
    finally:
        await db.close()


# ---------------------------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Problem:
    category: str
    job_id: int | None
    detail: str

    def __str__(self) -> str:
        where = f"job {self.job_id}: " if self.job_id is not None else ""
        return f"[{self.category}] {where}{self.detail}"


def result_messages(fake: FakeDiscord, job_id: int) -> list[JSON]:
    """Messages (channel, interaction or DM) carrying any of the job's result files."""
    name = re.compile(rf"(?:SPOILER_)?retouch-{job_id}-\d+\.\w+")
    return [
        message
        for message in fake.messages.values()
        if any(name.fullmatch(attachment.get("filename") or "") for attachment in message["attachments"])
    ]


def result_images(fake: FakeDiscord, job_id: int) -> int:
    """The job's images the member got: the most any one message carries (a second message
    with the same images is a duplicate, not more images)."""
    name = re.compile(rf"(?:SPOILER_)?retouch-{job_id}-\d+\.\w+")
    counts = [
        sum(1 for attachment in message["attachments"] if name.fullmatch(attachment.get("filename") or ""))
        for message in result_messages(fake, job_id)
    ]
    return max(counts, default=0)


def failure_notices(fake: FakeDiscord, job: JobFacts) -> list[JSON]:
    """Messages that tell the member this edit did not work: "❌" and the quoted prompt."""
    return [
        message
        for message in fake.messages.values()
        if "❌" in (message.get("content") or "") and job.prompt in (message.get("content") or "")
    ]


def judge(job: JobFacts, fake: FakeDiscord, *, produced: int | None = None) -> list[Problem]:
    """Every way this edit's end falls short of "delivered once" or "refunded and told".

    `produced` is how many images the host made for it, when known, so a delivery that
    silently dropped some of them counts as a lost result.
    """
    problems: list[Problem] = []

    def problem(category: str, detail: str) -> None:
        problems.append(Problem(category, job.id, detail))

    results = result_messages(fake, job.id)
    images = result_images(fake, job.id)
    if job.reserves != 1:
        problem(LEDGER, f"{job.reserves} reserve entries")
    if job.captures > 1 or job.releases > 1:
        problem(DOUBLE_CHARGE, f"settled more than once: {job.captures} captures, {job.releases} releases")
    if not job.final:
        problem(STUCK, f"left in state {job.state!r}")
        if job.reserved and not (job.captures or job.releases):
            problem(CREDITS_LOST, f"{job.reserved} credits still held by an unfinished job")
        return problems
    if job.reserves and not (job.captures or job.releases):
        problem(CREDITS_LOST, f"{job.state} but its hold of {job.reserved} was never settled")
    if job.reserved - job.released != job.captured:
        problem(CREDITS_LOST, f"reserve {job.reserved} − release {job.released} ≠ capture {job.captured}")
    if job.state == "done":
        if not results:
            problem(RESULT_LOST, "done, but no message carries its images")
        if len(results) > 1:
            problem(DUPLICATE_RESULT, f"its images are in {len(results)} messages")
        expected = job.price_per_image * images
        if job.captured > expected:
            problem(DOUBLE_CHARGE, f"charged {job.captured} for {images} image(s) at {job.price_per_image}")
        elif job.captured < expected:
            problem(LEDGER, f"charged {job.captured} for {images} image(s) at {job.price_per_image}")
        if produced is not None and images < produced:
            problem(RESULT_LOST, f"the host made {produced} image(s); the member got {images}")
        if (
            job.result_message_id is not None
            and len(results) == 1
            and int(results[0]["id"]) != job.result_message_id
        ):
            problem(LEDGER, "result_message_id does not name the message that carries the result")
    else:
        if results:
            problem(LEDGER, f"{job.state}, yet its images were posted (a free result)")
        if job.captured:
            problem(CREDITS_LOST, f"{job.state}, yet charged {job.captured}")
        if job.state != "cancelled" and not failure_notices(fake, job):
            problem(NOT_TOLD, f"{job.state} and refunded, but no message tells the member")
    return problems


# ---------------------------------------------------------------------------------------------- waiting


async def wait_for(
    check: Callable[[], T | None],
    *,
    events: Callable[[], Sequence[asyncio.Event]],
    timeout: float,
    what: str,
    poll: float = 0.05,
) -> T:
    """Until `check()` returns something: re-checked whenever a fake changes, and at least every
    `poll` seconds for changes no fake sees (rows the bot writes); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        watched = list(events())
        assert watched, "wait_for needs at least one fake's change event to wait on"
        found = check()
        if found is not None:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        waiters = [asyncio.ensure_future(event.wait()) for event in watched]
        try:
            await asyncio.wait(waiters, timeout=min(poll, left))
        finally:
            for waiter in waiters:
                waiter.cancel()
