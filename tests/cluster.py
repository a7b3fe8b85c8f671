"""Several `python -m bot run` processes, one per shard of the fake Discord, over one store and
one files folder: the launcher the cluster test and the scale-out benchmarks share.

Each process is configured only through its environment, as an operator would run it; what
tells the processes apart is their shard, their /metrics port and their lease name.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import aiohttp

from tests.e2e.conftest import BotProcess, env_for
from tests.fakes.discord import JSON, FakeDiscord, Guild, Interaction
from tests.fakes.runflow import FakeRunflow
from tests.images import png
from tests.postgres import free_port

T = TypeVar("T")

# Sets the machine name (its first argument) in a UTS namespace of its own, then execs the rest
# in the same process, so the process id is the bot's.
_UNSHARE = ("unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"')


def can_run_elsewhere() -> bool:
    """Whether this machine lets a process take a machine name of its own (`Cluster(elsewhere=)`)."""
    try:
        done = subprocess.run([*_UNSHARE, "probe", "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class Node:
    """One process of the cluster: its shard, its /metrics port, the machine name it sees and
    its lease name."""

    def __init__(self, shard: int, process: BotProcess, port: int, hostname: str) -> None:
        self.shard, self.process, self.port, self.hostname = shard, process, port, hostname

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    @property
    def lease_name(self) -> str:
        return f"{self.hostname}:{self.pid}"

    @property
    def running(self) -> bool:
        return self.process.process is not None and self.process.process.returncode is None

    async def wait(self) -> int:
        assert self.process.process is not None
        return await self.process.process.wait()

    async def takeovers(self) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/metrics") as response,
        ):
            found = re.search(r"^retouch_lease_takeovers_total (\S+)$", await response.text(), re.M)
        assert found is not None, "a survivor's /metrics has no retouch_lease_takeovers_total"
        return int(float(found.group(1)))


class Cluster:
    """One process per shard of `fake` (its `shard_count`), all on `store_url` and the files
    folder under `folder`, each with `overrides` on top of the e2e tests' environment.

    `async with` starts them all and waits until every shard is connected; leaving kills
    (SIGKILL) whichever is still running, so a failed run leaves no process behind.

    `elsewhere` names shards whose process runs under a machine name of its own (a UTS
    namespace, `unshare --uts`: root or user namespaces needed, see `can_run_elsewhere`), as on
    another machine: the others cannot see whether it is still running, only its leases.
    """

    def __init__(
        self,
        fake: FakeDiscord,
        runflow: FakeRunflow,
        folder: Path,
        store_url: str,
        overrides: Mapping[str, str] | None = None,
        *,
        elsewhere: Iterable[int] = (),
    ) -> None:
        self.fake = fake
        shards, away = fake.shard_count, set(elsewhere)
        self.nodes: list[Node] = []
        launcher: tuple[str, ...]
        for shard in range(shards):
            port = free_port()
            env = env_for(
                fake,
                runflow,
                folder,  # one files folder for all of them
                {
                    **(overrides or {}),
                    "RETOUCH_STORAGE__URL": store_url,
                    "RETOUCH_DISCORD__SHARD_COUNT": str(shards),
                    "RETOUCH_DISCORD__SHARD_IDS": f"[{shard}]",
                    "RETOUCH_WEB__PORT": str(port),
                },
            )
            hostname, launcher = socket.gethostname(), ()
            if shard in away:
                hostname = f"elsewhere-{shard}"
                launcher = (*_UNSHARE, hostname)
            process = BotProcess(env, folder / f"bot-{shard}.log", launcher=launcher)
            self.nodes.append(Node(shard, process, port, hostname))

    async def start(self, timeout: float = 60) -> None:
        """Start every process and wait until every shard is connected; a process that exits
        first (a configuration refused) fails the start at once, with the end of its log."""
        await asyncio.gather(*(node.process.start() for node in self.nodes))
        ready = asyncio.ensure_future(self.fake.wait_ready(timeout=timeout, shards=range(len(self.nodes))))
        exits = [asyncio.ensure_future(node.wait()) for node in self.nodes]
        await asyncio.wait({ready, *exits}, return_when=asyncio.FIRST_COMPLETED)
        for waiting in exits:
            waiting.cancel()
        if ready.done():
            ready.result()
            return
        ready.cancel()
        dead = next(node for node in self.nodes if not node.running)
        raise RuntimeError(
            f"shard {dead.shard}'s process exited before it was ready:\n{dead.process.log()[-3000:]}"
        )

    async def kill(self, node: Node) -> None:
        """`kill -9`: the process gets no chance to hand its jobs back."""
        await node.process.terminate(signal.SIGKILL)

    async def stop(self) -> None:
        for node in self.nodes:
            if node.running:
                await self.kill(node)

    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def one_guild_per_shard(fake: FakeDiscord, members: int) -> tuple[list[Guild], list[int]]:
    """A server on every shard of `fake` (its own first server on shard 0), and `members`
    members in every one of them, so each member can reach every process."""
    guilds = [
        fake.guilds[fake.guild_id],
        *(fake.add_guild(f"Shard {k}", shard=k) for k in range(1, fake.shard_count)),
    ]
    people = [fake.add_member(f"member {n}", guild=guilds[0]) for n in range(members)]
    for guild in guilds[1:]:
        for member in people:
            fake.add_member(f"member {member}", guild=guild, user_id=member)
    return guilds, people


async def burst(
    fake: FakeDiscord,
    members: list[int],
    guilds: list[Guild],
    edits: int,
    tag: str,
    image: JSON | None = None,
) -> list[Interaction]:
    """`edits` /edit commands at once, members and servers in turn, each with `image` (an
    `add_cdn_file` attachment; a small PNG by default)."""
    image = image or fake.add_cdn_file(png(), "p.png")
    return list(
        await asyncio.gather(
            *(
                fake.slash(
                    "edit",
                    in_guild=guilds[n % len(guilds)],
                    user=members[n % len(members)],
                    prompt=f"{tag} edit {n}",
                    image=image,
                )
                for n in range(edits)
            )
        )
    )


async def poll(check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.1) -> T:
    """Until `check()` gives something: the rows are the bots' to write and no fake sees them."""
    deadline = time.monotonic() + timeout
    while (found := check()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
    return found
