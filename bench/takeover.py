"""Takeover: from a `kill -9` of one of three processes on one PostgreSQL database to its jobs
finished (delivered and charged) by a survivor, beside the lease time.

Three processes, one a shard, take a burst of edits while the host holds every run, so the
claimed jobs all wait at the host, undelivered. The process holding the most of them is killed
with SIGKILL and the host lets every run finish; the figure is the time from the kill
to the last of the dead process's jobs `done`, taken by a survivor that resumes its host run.

Twice: with the dead process on this machine, where a survivor sees that its process id is gone
and takes over at its next look (every third of a lease); and with each process under a
machine name of its own (`unshare --uts`), as on three machines, where the survivors can only
wait for the dead one's leases to lapse: the issue's "within the lease time plus a few seconds". The baseline column is
the lease time (`jobs.lease_seconds`: the default in a full run, the least allowed with --quick).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.core import Config, Report, Row, say
from bench.scaling import overrides
from bench.world import InstantRunflow
from bot.runtime.config import JobsSettings
from storage.store import open_db
from tests.cluster import Cluster, burst, can_run_elsewhere, one_guild_per_shard, poll
from tests.fakes.discord import FakeDiscord
from tests.postgres import PgServer, find_server
from tests.reliability.store import read_rows

NAME = "takeover"
SHARDS = 3
IN_FLIGHT = 9  # claimed at once across the cluster: three a process, about
SLACK = 5.0  # the "few seconds" the goal allows beyond the lease


async def _kill_once(server: PgServer, cfg: Config, lease: float, elsewhere: bool) -> dict[str, Any]:
    name = server.create_database()
    url = server.url(name)
    try:
        await (await open_db(url)).close()
        async with FakeDiscord(shards=SHARDS) as fake, InstantRunflow() as host:
            guilds, members = one_guild_per_shard(fake, 20)
            settings = {**overrides(IN_FLIGHT), "RETOUCH_JOBS__LEASE_SECONDS": str(lease)}
            host.hold = True
            with tempfile.TemporaryDirectory(dir=cfg.workdir) as folder:
                away = range(SHARDS) if elsewhere else range(0)
                async with Cluster(fake, host, Path(folder), url, settings, elsewhere=away) as cluster:
                    await burst(fake, members, guilds, 3 * IN_FLIGHT, "takeover")

                    def at_host() -> dict[str, list[int]] | None:
                        """The claimed jobs by lease holder, once they are all at the host."""
                        running = (
                            read_rows(url, "SELECT id, lease_owner FROM jobs WHERE state = 'running'") or []
                        )
                        if len(running) < IN_FLIGHT:
                            return None
                        held: dict[str, list[int]] = {}
                        for row in running:
                            held.setdefault(row["lease_owner"], []).append(row["id"])
                        return held

                    holders = await poll(at_host, timeout=120, what="the claimed jobs at the host")
                    victim = max(cluster.nodes, key=lambda node: len(holders.get(node.lease_name, [])))
                    held = holders[victim.lease_name]
                    where = "another machine" if elsewhere else "this machine"
                    say(f"kill -9 of shard {victim.shard}'s process ({where}), holding {len(held)} runs")
                    killed = time.monotonic()
                    await cluster.kill(victim)
                    host.hold = False
                    host.release()
                    ids = ", ".join(map(str, held))

                    def taken() -> bool | None:
                        rows = read_rows(url, f"SELECT lease_owner FROM jobs WHERE id IN ({ids})") or []
                        return all(row["lease_owner"] != victim.lease_name for row in rows) or None

                    def finished() -> bool | None:
                        rows = read_rows(url, f"SELECT state FROM jobs WHERE id IN ({ids})") or []
                        return all(row["state"] == "done" for row in rows) or None

                    await poll(
                        taken, timeout=10 * lease + 60, what="a survivor to take the jobs over", every=0.05
                    )
                    taken_s = time.monotonic() - killed
                    await poll(finished, timeout=10 * lease + 60, what="the jobs to be finished", every=0.05)
                    finished_s = time.monotonic() - killed
                    survivors = [node for node in cluster.nodes if node is not victim]
                    takeovers = sum([await node.takeovers() for node in survivors])
    finally:
        server.drop_database(name)
    return {
        "jobs_of_the_dead_process": len(held),
        "taken_over_after_s": round(taken_s, 2),
        "finished_after_s": round(finished_s, 2),
        "survivors_takeovers_metric": takeovers,
    }


async def run(cfg: Config) -> Report:
    lease = cfg.pick(3.0, JobsSettings().lease_seconds)
    report = Report(NAME)
    server, why = await asyncio.to_thread(find_server)
    if server is None:
        report.notes.append(f"takeover not measured: no PostgreSQL server ({why})")
        return report
    cases = [("this machine", False)]
    if await asyncio.to_thread(can_run_elsewhere):
        cases.append(("another machine", True))
    else:
        report.notes.append("takeover from another machine not measured: `unshare --uts` is refused here")
    results: dict[str, dict[str, Any]] = {}
    try:
        for label, elsewhere in cases:
            results[label] = await _kill_once(server, cfg, lease, elsewhere)
    finally:
        server.close()
    report.rows = [
        Row(
            NAME,
            "takeover after kill -9: the dead process's jobs finished by a survivor (s)",
            result["finished_after_s"],
            "s",
            lease,
            goal=f"≤ lease + {SLACK:.0f} s",
            met=result["finished_after_s"] <= lease + SLACK,
            label=label,
        )
        for label, result in results.items()
    ]
    report.details = {"lease_seconds": lease, "processes": SHARDS, "in_flight": IN_FLIGHT, **results}
    return report
