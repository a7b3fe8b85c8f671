"""Scaling: edits delivered per second by 1, 2 and 3 `python -m bot run` processes on one
PostgreSQL database, with a zero-latency host — the scaling curve.

For each count of processes: a fake Discord with that many shards (one process a shard, a
server on each, every member in every server), a fresh database and files folder, and the
zero-latency host of `bench.world`. `/edit`s (1-megapixel inputs) go to the servers in turn, so
each process acknowledges its share, and any process may claim any job from the shared line;
the line is kept at `in_flight` open edits until the total has been sent. An edit is delivered
when its job is `done` (result posted and charged; its `completed_at`). The figure is the
steady-state rate (deliveries between 20 % and 80 % of the total, over the time that took, as
in `bench.throughput`); the baseline is one process's, same run, so the table's ratio for two
and three processes is 1p ÷ 2p and 1p ÷ 3p (the speed-ups are in the details and a note).

The fakes run in this process and the bots in their own; their CPU seconds per edit say where
the machine's cores went.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.core import Config, Report, Row, cpu_seconds, machine_cpu_seconds, say
from bench.images import photo_png
from bench.ledger import sql_shape
from bench.throughput import steady_rates
from bench.world import InstantRunflow
from storage.store import open_db
from tests.cluster import Cluster, burst, one_guild_per_shard
from tests.fakes.discord import FakeDiscord, Guild
from tests.postgres import PgServer, find_server

NAME = "scaling"
PROCESSES = (1, 2, 3)
FINAL = "('done', 'failed', 'cancelled', 'refunded')"


def overrides(in_flight: int) -> dict[str, str]:
    """Limits raised so that fairness, quotas and credits never throttle the measurement (as
    `bench.harness.wide_open`), and the bots' logs kept to warnings (as the in-process benchmarks)."""
    return {
        "RETOUCH_LOG__LEVEL": "WARNING",
        "RETOUCH_EDITING__MAX_JOBS_PER_MEMBER": str(in_flight),
        "RETOUCH_EDITING__MAX_JOBS_PER_SERVER": "10000",
        "RETOUCH_CREDITS__DEFAULT_ALLOWANCE": "1000000000",
        "RETOUCH_CREDITS__CONFIRM_ABOVE": "1000000000",
        "RETOUCH_PROVIDERS__RUNFLOW__MAX_CONCURRENCY": str(in_flight),
    }


class Line:
    """The edits sent to a cluster and those it has ended, read from the shared database."""

    def __init__(
        self,
        fake: FakeDiscord,
        guilds: list[Guild],
        members: list[int],
        conn: asyncpg.Connection[asyncpg.Record],
    ) -> None:
        self.fake, self.guilds, self.members, self.conn = fake, guilds, members, conn
        self.image = fake.add_cdn_file(photo_png(1024, 1024), "photo.png")
        self.sent_at: list[float] = []
        self.reads = 0  # this side's own transactions, beside the bots'

    async def ended(self) -> int:
        self.reads += 1
        return int(await self.conn.fetchval(f"SELECT COUNT(*) FROM jobs WHERE state IN {FINAL}"))

    async def send(self, count: int) -> None:
        await burst(self.fake, self.members, self.guilds, count, "scaling", self.image)
        self.sent_at += [time.time()] * count

    async def drive(self, total: int, in_flight: int, timeout: float) -> None:
        """Keep `in_flight` edits open until `total` more have been sent, then wait for all to end."""
        target = len(self.sent_at) + total
        batch = max(1, in_flight // 10)
        async with asyncio.timeout(timeout):
            while True:
                ended = await self.ended()
                if ended >= target:
                    return
                room = min(in_flight - (len(self.sent_at) - ended), target - len(self.sent_at))
                if room >= batch or (room > 0 and len(self.sent_at) + room == target):
                    await self.send(room)
                else:
                    await asyncio.sleep(0.05)  # the rows are the bots' to write: read them again

    async def delivered_at(self, after_id: int) -> list[float]:
        rows = await self.conn.fetch(
            "SELECT completed_at FROM jobs WHERE state = 'done' AND id > $1 ORDER BY completed_at", after_id
        )
        return [datetime.fromisoformat(row["completed_at"]).timestamp() for row in rows]

    async def transactions(self, database: str) -> int:
        """Transactions the database has ended so far (PostgreSQL's statistics, which lag a
        second or so behind: enough over a run of many edits)."""
        return int(
            await self.conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1", database
            )
        )

    async def last_id(self) -> int:
        return int(await self.conn.fetchval("SELECT COALESCE(MAX(id), 0) FROM jobs"))


def lock_names(guilds: list[Guild], members: list[int]) -> dict[str, str]:
    """The advisory lock keys the product takes (bot/, storage/: `Tx.lock`), each with the name
    it is reported under, so a wait in `pg_locks` says which lock it waits for."""
    names = {"job-claims": "job-claims", "credits:owner-budget": "credits:owner-budget"}
    for guild in guilds:
        for kind in ("credits:server", "open-jobs:server", "guild_settings"):
            names[f"{kind}:{guild.id}"] = f"{kind}:<server>"
        for member in members:
            names[f"member:{guild.id}:{member}"] = "member:<server>:<member>"
    for member in members:
        names[f"open-jobs:member:{member}"] = "open-jobs:member:<member>"
    return names


class Activity:
    """What the cluster's connections to the database do, sampled every 50 ms from
    `pg_stat_activity` and `pg_locks` while the line runs: running a statement, waiting for a
    lock (which) or for the disk, or idle inside a transaction (the bot between two statements
    of it). The database side of where an edit's time goes."""

    def __init__(self, url: str, database: str, locks: dict[str, str]) -> None:
        self.url, self.database, self.locks = url, database, locks
        self._keys: dict[tuple[int, int], str] = {}
        self.seen: Counter[str] = Counter()
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def _what(self, row: asyncpg.Record) -> str:
        if row["state"] == "idle in transaction":
            return f"idle in transaction after: {sql_shape(row['query'])}"
        if row["classid"] is not None:
            key = self._keys.get((row["classid"], row["objid"]), "another key")
            return f"waiting for the advisory lock {key}"
        wait = f" ({row['wait_event_type']}: {row['wait_event']})" if row["wait_event_type"] else ""
        return f"running{wait}: {sql_shape(row['query'])}"

    async def _sample(self) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            # An advisory lock on a bigint key shows in pg_locks as its high and low 32 bits.
            for row in await conn.fetch(
                "SELECT key, hashtextextended(key, 0) AS h FROM unnest($1::text[]) AS key", list(self.locks)
            ):
                self._keys[(row["h"] >> 32) & 0xFFFFFFFF, row["h"] & 0xFFFFFFFF] = self.locks[row["key"]]
            while True:
                rows = await conn.fetch(
                    "SELECT a.state, a.wait_event_type, a.wait_event, a.query, l.classid, l.objid "
                    "FROM pg_stat_activity AS a LEFT JOIN pg_locks AS l "
                    "ON l.pid = a.pid AND l.locktype = 'advisory' AND NOT l.granted "
                    "WHERE a.datname = $1 AND a.pid <> pg_backend_pid() AND a.state <> 'idle'",
                    self.database,
                )
                self.seen.update(self._what(row) for row in rows)
                self.samples += 1
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    async def __aenter__(self) -> Activity:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def busiest(self, limit: int = 8) -> list[str]:
        """The commonest, as connections doing it on average (busy connections at once)."""
        samples = max(1, self.samples)
        return [f"{n / samples:5.2f}  {what}" for what, n in self.seen.most_common(limit)]


async def _one_count(
    server: PgServer, processes: int, cfg: Config, in_flight: int, total: int
) -> dict[str, Any]:
    """The rate of `processes` processes on a fresh database, and what each cost in CPU."""
    name = server.create_database()
    url = server.url(name)
    try:
        await (await open_db(url)).close()  # migrated once, as `python -m bot migrate` would
        async with FakeDiscord(shards=processes) as fake, InstantRunflow() as host:
            guilds, members = one_guild_per_shard(fake, 20)
            with tempfile.TemporaryDirectory(dir=cfg.workdir) as folder:
                async with Cluster(fake, host, Path(folder), url, overrides(in_flight)) as cluster:
                    conn = await asyncpg.connect(url)
                    try:
                        line = Line(fake, guilds, members, conn)
                        warm = 4 * processes
                        say(f"{processes} process(es): warm-up, {warm} edits")
                        await line.drive(warm, warm, timeout=120)
                        first = await line.last_id()
                        sent = len(line.sent_at)
                        say(f"{processes} process(es): {total} edits, {in_flight} in flight")
                        pids = [node.pid for node in cluster.nodes]
                        bots, fakes, machine = (
                            sum(map(cpu_seconds, pids)),
                            cpu_seconds(),
                            machine_cpu_seconds(),
                        )
                        transactions, reads = await line.transactions(name), line.reads
                        async with Activity(url, name, lock_names(guilds, members)) as activity:
                            await line.drive(total, in_flight, timeout=900)
                        # The bots' alone: less this side's reads, the sampler's and its lock names.
                        transactions = await line.transactions(name) - transactions
                        transactions -= line.reads - reads + activity.samples + 1
                        cpu_bots = sum(map(cpu_seconds, pids)) - bots
                        cpu_fakes = cpu_seconds() - fakes
                        cpu_machine = machine_cpu_seconds() - machine
                        done_at = await line.delivered_at(first)
                        rates = steady_rates(line.sent_at[sent:], done_at)
                    finally:
                        await conn.close()
                unanswered = len(fake.unanswered())
    finally:
        server.drop_database(name)
    delivered, wall = max(1, rates.get("completed", 0)), max(1e-9, rates.get("wall_s", 1))
    return {
        **rates,
        "processes": processes,
        "unanswered_within_3s": unanswered,
        "bots_cpu_ms_per_edit": round(cpu_bots / delivered * 1000, 1),
        "fakes_cpu_ms_per_edit": round(cpu_fakes / delivered * 1000, 1),
        "database_transactions_per_edit": round(transactions / delivered, 1),
        "cores_busy": {
            "bots": round(cpu_bots / wall, 2),
            "fakes": round(cpu_fakes / wall, 2),
            "whole_machine": round(cpu_machine / wall, 2),
            "of": os.cpu_count(),
        },
        "database_connections_busy_on_average": activity.busiest(),
    }


async def run(cfg: Config) -> Report:
    in_flight, total = cfg.pick(12, 60), cfg.pick(36, 300)
    report = Report(NAME)
    server, why = await asyncio.to_thread(find_server)
    if server is None:
        report.notes.append(f"scaling not measured: no PostgreSQL server ({why})")
        return report
    try:
        results = [await _one_count(server, p, cfg, in_flight, total) for p in PROCESSES]
    finally:
        server.close()
    one = results[0].get("steady_per_s", 0.0)
    speedups = {
        f"{r['processes']}p/1p": round(r.get("steady_per_s", 0.0) / one, 2) if one else None for r in results
    }
    report.rows = [
        Row(
            NAME,
            f"edits/s delivered, {r['processes']} process{'es' if r['processes'] > 1 else ''}, "
            f"zero-latency host, {in_flight} in flight",
            r.get("steady_per_s", 0.0),
            "edits/s",
            None if r["processes"] == 1 else one,
            goal="" if r["processes"] == 1 else "more than 1 process",
            met=None if r["processes"] == 1 else r.get("steady_per_s", 0.0) > one,
            higher_is_better=True,
            label=f"PostgreSQL, {os.cpu_count()} cores",
        )
        for r in results
    ]
    report.details = {
        "in_flight": in_flight,
        "sent_per_count": total,
        "speedups": speedups,
        "by_processes": results,
    }
    report.notes.append(
        "scaling: "
        + ", ".join(f"{k} = {v}×" for k, v in speedups.items() if k != "1p/1p")
        + f"; cores busy, the bots' of the whole machine's (of {os.cpu_count()}): "
        + ", ".join(
            f"{r['processes']}p {r['cores_busy']['bots']}/{r['cores_busy']['whole_machine']}" for r in results
        )
        + "; the bots' CPU per edit: "
        + ", ".join(f"{r['processes']}p {r['bots_cpu_ms_per_edit']} ms" for r in results)
        + "; database transactions per edit: "
        + ", ".join(f"{r['processes']}p {r['database_transactions_per_edit']}" for r in results)
    )
    report.profile = {
        "note": "what the database connections did, sampled from pg_stat_activity",
        "summary": [
            line
            for r in results
            for line in (
                f"{r['processes']} process(es), connections on average:",
                *r["database_connections_busy_on_average"],
            )
        ],
    }
    return report
