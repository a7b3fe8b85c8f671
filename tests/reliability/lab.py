"""The bench the reliability tests run on: the fakes, the bot (a process or in this one), edits.

`CrashLab` runs `python -m bot run` as a child process, configured only by its environment
(`tests.e2e.conftest.env_for`) like `tests.e2e.conftest.BotProcess`, so it can be killed with
SIGKILL and started again on the same data directory and the same fakes; the process is
started through `warm_bot` so that restarts do not pay the imports again. `BotLab` runs the
bot in the test's event loop (`InProcessBot`), which is faster, for fault tests that need no
crash. Both share the member's side (`ask`, `refine`) and the checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.e2e.conftest import ROOT, InProcessBot, env_for
from tests.e2e.helpers import text
from tests.fakes.discord import Interaction
from tests.images import png
from tests.postgres import bot_store_url
from tests.reliability.fakes import ReliableDiscord, ReliableRunflow
from tests.reliability.harness import (
    BASE_ENV,
    FINAL_STATES,
    JSON,
    LEDGER,
    REQUEST_DROPPED,
    TALLY,
    UNEXPECTED_END,
    JobFacts,
    Problem,
    failure_notices,
    judge,
    ledger_problems,
    read_jobs,
    result_messages,
    wait_for,
)
from tests.reliability.store import DbFreeze, Store, exists


class Lab:
    """The member's side and the auditor's side of a test; subclasses own the bot."""

    def __init__(self, discord: ReliableDiscord, runflow: ReliableRunflow, data: Path, *, seed: int) -> None:
        self.discord = discord
        self.runflow = runflow
        self.data = data
        self.store: Store = bot_store_url() or data / "retouch.db"
        self.seed = seed
        self.rng = random.Random(seed)
        self.known_bug = False
        self._prompts = 0

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self.rng.seed(seed)

    # -- the member

    def prompt(self, label: str) -> str:
        """A prompt unique in this test, so messages and rows can be matched to it; plain words
        only, so the quote in the member's message (markdown escaped) is the prompt itself."""
        self._prompts += 1
        words = re.sub(r"[^a-z0-9]+", " ", label.lower()).strip()
        return f"{words} number {self._prompts} seed {self.seed}"

    async def ask(
        self, prompt: str, *, user: int | None = None, count: int = 1, private: bool = False
    ) -> Interaction:
        image = self.discord.add_cdn_file(png(48, 32), "photo.png")
        return await self.discord.slash(
            "edit", prompt=prompt, image=image, count=count, private=private, user=user
        )

    async def refine(self, result: JSON, prompt: str) -> Interaction:
        """Refine a result message: click, get the modal, submit the new prompt."""
        click = await self.discord.click(result, "Refine")
        await click.wait_modal()
        return await self.discord.submit_modal(click, {"prompt": prompt})

    # -- the database

    def jobs(self) -> dict[int, JobFacts]:
        return read_jobs(self.store)

    def job(self, prompt: str) -> JobFacts | None:
        return next((job for job in self.jobs().values() if job.prompt == prompt), None)

    def freeze(self) -> DbFreeze:
        return DbFreeze(self.store)

    def _events(self) -> list[asyncio.Event]:
        return [self.discord.changed(), self.runflow.changed()]

    async def wait_job(self, prompt: str, *states: str, timeout: float = 20) -> JobFacts:
        """The job for `prompt` once it is in one of `states` (any state when none given)."""

        def check() -> JobFacts | None:
            job = self.job(prompt)
            return job if job is not None and (not states or job.state in states) else None

        return await wait_for(
            check, events=self._events, timeout=timeout, what=f"job {prompt!r} in {states or 'any state'}"
        )

    async def wait_event(self, event: asyncio.Event, what: str, timeout: float = 20) -> None:
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}") from None

    async def wait_result(self, prompt: str, timeout: float = 20) -> JSON:
        """The message carrying the result of the edit asked with `prompt`."""
        job = await self.wait_job(prompt, "done", timeout=timeout)

        def check() -> JSON | None:
            found = result_messages(self.discord, job.id)
            return found[0] if found else None

        return await wait_for(check, events=self._events, timeout=timeout, what=f"the result of {prompt!r}")

    async def settle(self, prompts: Sequence[str], *, timeout: float = 30, told_within: float = 2) -> None:
        """Until every job is final (or `timeout`) and what follows a final state has had its
        chance to show: the result message is posted before `done` is written, the failure
        notice after `failed` is, so a failed job gets `told_within` seconds for its notice."""

        def settled() -> bool | None:
            jobs = self.jobs()
            mine = [job for job in jobs.values() if job.prompt in prompts]
            if len(mine) < len(prompts) or any(job.state not in FINAL_STATES for job in jobs.values()):
                return None
            return True

        with contextlib.suppress(TimeoutError):  # a job that never ends is the judge's to report
            await wait_for(settled, events=self._events, timeout=timeout, what=f"{list(prompts)} to finish")
        waiting = [job for job in self.jobs().values() if job.state in ("failed", "refunded")]
        if waiting:
            with contextlib.suppress(TimeoutError):
                await wait_for(
                    lambda: True if all(failure_notices(self.discord, job) for job in waiting) else None,
                    events=self._events,
                    timeout=told_within,
                    what="failure notices",
                )

    # -- the verdict

    def produced(self, job: JobFacts) -> int | None:
        """How many images the host made for the job's run, when that run is at the fake."""
        run = self.runflow.runs.get(job.run_id or "")
        return len(run.files) if run is not None and run.status_code == "succeeded" else None

    async def verdict(self, prompts: Sequence[str], *, expect: Iterable[str] = ("done",)) -> list[Problem]:
        """Judge every job in the database (not just `prompts`) and check the ledger.

        A job for one of `prompts` must also end in one of the `expect`ed states.
        """
        jobs = self.jobs()
        wanted = set(expect)
        problems: list[Problem] = []
        for prompt in prompts:
            if not any(job.prompt == prompt for job in jobs.values()):
                problems.append(Problem(REQUEST_DROPPED, None, f"no job was ever made for {prompt!r}"))
        for job in jobs.values():
            problems += judge(job, self.discord, produced=self.produced(job))
            if job.prompt in prompts and job.final and job.state not in wanted:
                problems.append(
                    Problem(UNEXPECTED_END, job.id, f"ended {job.state}, expected {sorted(wanted)}")
                )
        members = {(job.guild_id or 0, job.user_id) for job in jobs.values()}
        charged: dict[int, int] = {}
        for job in jobs.values():
            charged[job.user_id] = charged.get(job.user_id, 0) + job.captured
        if exists(self.store):
            problems += [
                Problem(LEDGER, None, text) for text in await ledger_problems(self.store, members, charged)
            ]
        job_runs = {job.run_id for job in jobs.values()}
        TALLY.host_runs_orphaned += sum(1 for run_id in self.runflow.runs if run_id not in job_runs)
        TALLY.jobs_judged += len(jobs)
        return problems

    def record(self, problems: list[Problem], *, known_bug: bool | None = None) -> list[Problem]:
        """Count the problems in the figures: under known bugs when the test pins one down."""
        TALLY.record(problems, known_bug=self.known_bug if known_bug is None else known_bug)
        return problems

    def report(self, problems: Sequence[Problem]) -> str:
        """What a failing assertion prints: the seed to replay, the problems, the evidence."""
        lines = [f"seed {self.seed}: {len(problems)} problem(s)", *(f"  {p}" for p in problems)]
        for job in self.jobs().values():
            lines.append(f"  {job}")
        lines.append(
            f"  host runs: {[(r.id[:8], r.status_code, len(r.files)) for r in self.runflow.runs.values()]}"
        )
        lines += self.evidence()
        return "\n".join(lines)

    def evidence(self) -> list[str]:
        return []

    def count_faults(self) -> None:
        TALLY.faults_fired += self.discord.faults_fired + self.runflow.faults_fired()


class BotChild:
    """One `python -m bot run` process (through `warm_bot`, see there), logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def spawn(self) -> BotChild:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RETOUCH_")}
        environment.update(self.env)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.reliability.warm_bot",
                cwd=ROOT,
                env=environment,
                stdin=asyncio.subprocess.PIPE,
                stdout=log,
                stderr=log,
            )
        return self

    async def go(self) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b"run\n")
        await self.process.stdin.drain()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(20):
            return await self.process.wait()


class CrashLab(Lab):
    """The bot as a child process that the test kills with SIGKILL and starts again.

    While one bot runs, the next one waits fully imported (`warm_bot`), so a restart costs
    the bot's own start-up, not the interpreter's imports.
    """

    def __init__(
        self,
        discord: ReliableDiscord,
        runflow: ReliableRunflow,
        data: Path,
        *,
        seed: int,
        overrides: dict[str, str] | None = None,
    ) -> None:
        super().__init__(discord, runflow, data, seed=seed)
        self.overrides = dict(overrides or {})
        self.bot: BotChild | None = None
        self._spare: BotChild | None = None
        self.log_path = data / "bot.log"

    def _env(self) -> dict[str, str]:
        return env_for(self.discord, self.runflow, self.data, {**BASE_ENV, **self.overrides})

    async def start(self) -> None:
        """Start the bot and wait until it is connected (or fail if it exits first)."""
        env = self._env()
        child, self._spare = self._spare, None
        if child is None or child.env != env or not child.alive:
            if child is not None:
                await child.kill()
            # Spawn this one's successor now too: both import at once, on two cores.
            child = await BotChild(env, self.log_path).spawn()
            self._spare = await BotChild(env, self.log_path).spawn()
        await child.go()
        self.bot = child
        assert child.process is not None
        exited = asyncio.ensure_future(child.process.wait())
        ready = asyncio.ensure_future(self.discord.wait_ready(timeout=30))
        await asyncio.wait({exited, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise AssertionError(f"the bot exited with {exited.result()} before it was ready:\n{self.tail()}")
        exited.cancel()
        ready.result()
        if self._spare is None:
            self._spare = await BotChild(env, self.log_path).spawn()

    async def crash(self, jitter: float = 0.0) -> None:
        """SIGKILL the bot, after `jitter` seconds: the one deliberate sleep in these tests, the
        random moment of the kill (drawn from the test's seed, which failures print)."""
        assert self.bot is not None
        if jitter > 0:
            await asyncio.sleep(jitter)
        code = await self.bot.kill()
        assert code == -signal.SIGKILL, f"the bot had already exited with {code}:\n{self.tail()}"
        await self.discord.wait_disconnected(timeout=15)
        TALLY.crash_runs += 1

    async def restart(self) -> None:
        await self.start()
        TALLY.restarts += 1

    async def stop(self) -> None:
        for child in (self.bot, self._spare):
            if child is not None and child.process is not None:
                await child.kill()

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def evidence(self) -> list[str]:
        return ["  bot log (tail):", *(f"    {line}" for line in self.tail().splitlines())]


class BotLab(Lab):
    """The bot in the test's event loop, for fault tests that need no crash."""

    def __init__(
        self, discord: ReliableDiscord, runflow: ReliableRunflow, data: Path, bot: InProcessBot
    ) -> None:
        super().__init__(discord, runflow, data, seed=0)
        self.bot = bot

    @property
    def web_port(self) -> int:
        assert self.bot.bot is not None and self.bot.bot.web.port is not None
        return self.bot.bot.web.port

    async def outcome(
        self,
        prompts: Sequence[str],
        *,
        expect: Iterable[str] = ("done",),
        timeout: float = 30,
        told_within: float = 2,
        tolerate: Iterable[str] = (),
    ) -> list[Problem]:
        """Settle, judge and count; the test asserts the result is empty. Problems in a
        `tolerate`d category are the scenario's nature (a member no message can reach), not a
        fault of the bot: they are left out of the result and of the figures."""
        await self.settle(prompts, timeout=timeout, told_within=told_within)
        self.count_faults()
        TALLY.fault_scenarios += 1
        excused = set(tolerate)
        problems = [p for p in await self.verdict(prompts, expect=expect) if p.category not in excused]
        return self.record(problems)

    def shown(self, prompt: str) -> str:
        """What the member's message for this edit says now (result, progress or failure); a
        failure withdraws the public status message, so then it is the private notice."""
        job = self.job(prompt)
        assert job is not None and job.status_message_id is not None
        found: Any = self.discord.messages.get(job.status_message_id)
        if found is None:
            return "\n".join(text(notice) for notice in failure_notices(self.discord, job))
        return text(found)
