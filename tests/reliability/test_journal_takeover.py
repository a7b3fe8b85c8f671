"""An edit acknowledged by a process whose machine never returns still runs, on another machine.

Two `python -m bot run` processes share one PostgreSQL database, one per shard of two, each with
its own data folder (nothing on disk is shared, as between two machines). Process A believes it
runs on another machine (its host name is patched before the bot starts), so its lease name
names a machine where B cannot look for its process id: B learns that A is gone only from A's
lapsed lease. A member's `/edit` reaches A; A acknowledges it (Discord has accepted the defer)
and is killed with SIGKILL before it writes the job. B must write and run that edit within a
lease and a few seconds, charge the member once and deliver to them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, env_for
from tests.reliability.fakes import ReliableDiscord, ReliableRunflow
from tests.reliability.harness import BASE_ENV, REQUEST_DROPPED, Problem
from tests.reliability.lab import Lab

LEASE = 3  # seconds (the least `jobs.lease_seconds` allows); B looks for lapsed ones every second
CALLBACK = r"/interactions/\d+/[^/]+/callback$"

# `python -m bot run` on a machine named argv[1].
ELSEWHERE = """
import runpy, socket, sys
host = sys.argv[1]
socket.gethostname = lambda: host
sys.argv = [sys.argv[0], "run"]
runpy.run_module("bot", run_name="__main__", alter_sys=True)
"""


class Machine:
    """One bot process with a data folder of its own, optionally on a machine of another name."""

    def __init__(self, env: dict[str, str], folder: Path, hostname: str | None = None) -> None:
        self.env, self.folder, self.hostname = env, folder, hostname
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETOUCH_")}
        env.update(self.env)
        program = ["-m", "bot", "run"] if self.hostname is None else ["-c", ELSEWHERE, self.hostname]
        with (self.folder / "bot.log").open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *program, cwd=ROOT, env=env, stdout=log, stderr=log
            )

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            async with asyncio.timeout(20):
                await self.process.wait()

    def log(self) -> str:
        return (self.folder / "bot.log").read_text(encoding="utf-8", errors="replace")


@pytest.fixture
async def two_shards() -> AsyncIterator[ReliableDiscord]:
    fake = ReliableDiscord(shards=2)
    await fake.start()
    yield fake
    await fake.close()


async def test_an_edit_acknowledged_by_a_machine_that_never_returns_runs_on_another(
    two_shards: ReliableDiscord, runflow: ReliableRunflow, tmp_path: Path, pg_url: str
) -> None:
    discord = two_shards
    machines = []
    for shard, hostname in ((1, None), (0, "machine-a")):
        folder = tmp_path / f"shard-{shard}"
        folder.mkdir()
        env = env_for(
            discord,
            runflow,
            folder,
            {
                **BASE_ENV,
                "RETOUCH_STORAGE__URL": pg_url,
                "RETOUCH_DISCORD__SHARD_COUNT": "2",
                "RETOUCH_DISCORD__SHARD_IDS": f"[{shard}]",
                "RETOUCH_JOBS__LEASE_SECONDS": str(LEASE),
            },
        )
        machine = Machine(env, folder, hostname)
        machines.append(machine)
        await machine.start()
        await discord.wait_ready(timeout=60, shards=[shard])
    b, a = machines
    lab = Lab(discord, runflow, tmp_path, seed=0)
    lab.store = pg_url
    try:
        hold = discord.hold_next("POST", CALLBACK, when="after")
        prompt = lab.prompt("acknowledged then lost")
        await lab.ask(prompt)  # the first server is on shard 0: A's
        await lab.wait_event(hold.arrived, "A's acknowledgement")
        await a.kill()
        killed_at = time.monotonic()
        discord.clear_holds()
        await discord.wait_disconnected(timeout=15, shards=[0])

        problems: list[Problem] = []
        try:
            await lab.wait_job(prompt, timeout=LEASE + 5)
        except TimeoutError:
            problems.append(Problem(REQUEST_DROPPED, None, "no process wrote the acknowledged edit"))
        else:
            taken_within = time.monotonic() - killed_at
            await lab.settle([prompt])
            problems = await lab.verdict([prompt])  # delivered once, charged once, the member told
            assert taken_within <= LEASE + 5
            (job,) = lab.jobs().values()
            assert (job.state, job.captures) == ("done", 1)
        lab.record(problems)
        assert not problems, lab.report(problems) + "\nB's log:\n" + b.log()[-3000:]
        assert "taking over an acknowledged edit from machine-a:" in b.log()
    finally:
        for machine in machines:
            await machine.kill()
