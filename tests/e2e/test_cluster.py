"""Three `python -m bot run` processes, one per shard of three, over one PostgreSQL database and
one files folder, against one sharded fake Discord and one fake host; one is killed with
SIGKILL while it holds runs at the host, and the survivors finish its edits.

The burst comes in two halves. The first reaches every shard while the host holds every run, so
the claimed jobs are all at the host, none delivered, when the process holding the most of them
is killed. The host then lets runs finish, and the second half goes to the surviving shards (the
killed shard's servers have no process left to answer them) in rounds, one edit per member, each
round once every member is under their limit again. Every member uses every server, so
their edits reach different processes and their limit can only hold if it is counted in the
shared database.

What is asserted is what a member, the owner and the host can see: each acknowledged edit
delivered in exactly one message or refunded and its member told (or refused at once and told
privately), the ledger conserved and nobody charged twice, one host run per job, the killed
process's jobs taken over by a survivor, and no member with more edits open at once than allowed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from storage.store import open_db
from tests.cluster import Cluster, burst, one_guild_per_shard, poll
from tests.e2e.helpers import EPHEMERAL
from tests.fakes.discord import FakeDiscord, Interaction
from tests.fakes.runflow import FakeRunflow
from tests.reliability.harness import (
    BASE_ENV,
    CREDITS_LOST,
    NOT_TOLD,
    RESULT_LOST,
    STUCK,
    judge,
    ledger_problems,
    read_jobs,
)
from tests.reliability.store import read_rows

SHARDS = 3
MEMBERS = 20
EDITS_PER_HALF = 100
PER_MEMBER = 4  # editing.max_jobs_per_member; the first half asks 5 of each member at once
ROUNDS = EDITS_PER_HALF // MEMBERS  # the second half: one edit per member a round
IN_FLIGHT = 9  # the host's max_concurrency: the cluster-wide cap on claimed jobs
HOST_LATENCY = 0.1  # seconds each run takes at the fake host once runs are let through


@pytest.fixture
def fake_shards() -> int:
    return SHARDS


def refused_privately(interaction: Interaction) -> bool:
    """The edit was refused on the spot and only its member was told."""
    if any(r.get("type") == 4 and r["data"].get("flags", 0) & EPHEMERAL for r in interaction.responses):
        return True
    return any(message.get("flags", 0) & EPHEMERAL for message in interaction.followups)


def unanswered(store: str, interactions: Iterable[Interaction]) -> list[Interaction]:
    """Edits neither refused on the spot nor written as a job yet."""
    rows = read_rows(store, "SELECT interaction_token FROM jobs") or []
    tokens = {row["interaction_token"] for row in rows}
    return [i for i in interactions if i.token not in tokens and not refused_privately(i)]


def room_for_all(store: str, asked: list[Interaction]) -> bool | None:
    """Whether every edit asked so far was answered and no member has as many open as allowed
    (so a round of the second half, one edit each, is taken rather than refused: members who
    wait for a result before asking again)."""
    if unanswered(store, asked):
        return None
    rows = read_rows(
        store,
        "SELECT user_id, COUNT(*) AS open FROM jobs "
        "WHERE state NOT IN ('done', 'failed', 'cancelled', 'refunded') GROUP BY user_id",
    )
    return (rows is not None and all(row["open"] < PER_MEMBER for row in rows)) or None


def most_open_at_once(rows: Iterable[dict[str, Any]]) -> dict[int, int]:
    """For each member, the most of their edits that were open at the moment one was created
    (the instant their limit is checked): created before it and not yet ended."""
    by_member: dict[int, list[tuple[str, str | None]]] = {}
    for row in rows:
        end = row["updated_at"] if row["state"] in ("done", "failed", "cancelled", "refunded") else None
        by_member.setdefault(row["user_id"], []).append((row["created_at"], end))
    return {
        member: max(
            sum(1 for start, end in spans if start <= created and (end is None or end > created))
            for created, _ in spans
        )
        for member, spans in by_member.items()
    }


async def test_three_processes_survive_a_kill_mid_burst(
    discord_fake: FakeDiscord,
    runflow: FakeRunflow,
    tmp_path: Path,
    pg_url: str,
    record_property: Callable[[str, object], None],
) -> None:
    fake = discord_fake
    guilds, members = one_guild_per_shard(fake, MEMBERS)
    await (await open_db(pg_url)).close()  # migrated once, as `python -m bot migrate` would

    overrides = {
        **BASE_ENV,
        "RETOUCH_JOBS__LEASE_SECONDS": "3",
        "RETOUCH_EDITING__MAX_JOBS_PER_MEMBER": str(PER_MEMBER),
        "RETOUCH_EDITING__MAX_JOBS_PER_SERVER": "1000",
        "RETOUCH_PROVIDERS__RUNFLOW__MAX_CONCURRENCY": str(IN_FLIGHT),
    }
    cluster = Cluster(fake, runflow, tmp_path, pg_url, overrides)
    nodes = cluster.nodes
    started = time.monotonic()
    runflow.hold = True
    async with cluster:
        # The first half, on every shard, while the host holds every run.
        first = await burst(fake, members, guilds, EDITS_PER_HALF, "first")

        def first_half_settled() -> dict[int, str] | None:
            """Every first-half edit refused or in the database, and the claimed ones at the host."""
            if unanswered(pg_url, first):
                return None
            rows = read_rows(pg_url, "SELECT interaction_token, state, lease_owner FROM jobs") or []
            running = [row for row in rows if row["state"] == "running"]
            if len(running) < min(IN_FLIGHT, len(rows)):
                return None
            return {row["interaction_token"]: row["lease_owner"] for row in running}

        at_host = await poll(first_half_settled, timeout=60, what="the first half at the host")
        victim = max(nodes, key=lambda node: sum(owner == node.lease_name for owner in at_host.values()))
        victim_runs = sum(owner == victim.lease_name for owner in at_host.values())
        assert victim_runs > 0
        assert victim.process.process is not None
        await cluster.kill(victim)
        survivors = [node for node in nodes if node is not victim]

        # The host lets runs finish; the second half goes to the shards that still have a process.
        runflow.delay = HOST_LATENCY
        runflow.hold = False
        runflow.release()
        live = [g for g in guilds if fake.shard_of(g) != victim.shard]
        second: list[Interaction] = []
        for round_ in range(ROUNDS):
            room = functools.partial(room_for_all, pg_url, [*first, *second])
            await poll(room, timeout=60, what="every member under their limit")
            second += await burst(
                fake, members, live[round_ % 2 :] + live[: round_ % 2], MEMBERS, f"second {round_}"
            )
        interactions = [*first, *second]

        def ended() -> dict[int, Any] | None:
            jobs = read_jobs(pg_url)
            if not all(job.final for job in jobs.values()):
                return None
            if unanswered(pg_url, interactions):
                return None
            if any(judge(job, fake, produced=1) for job in jobs.values()):
                return None  # a result or a failure notice may still be on its way
            return jobs

        jobs = await poll(ended, timeout=90, what="every edit to end")
        seconds = time.monotonic() - started
        takeovers = sum([await node.takeovers() for node in survivors])

    rows = read_rows(
        pg_url, "SELECT interaction_token, user_id, guild_id, state, created_at, updated_at FROM jobs"
    )
    assert rows is not None
    tokens = {row["interaction_token"] for row in rows}
    refused = [i for i in interactions if i.token not in tokens]
    problems = [problem for job in jobs.values() for problem in judge(job, fake, produced=1)]
    charged: dict[tuple[int, int], int] = {}
    for job in jobs.values():
        assert job.guild_id is not None
        charged[(job.guild_id, job.user_id)] = charged.get((job.guild_id, job.user_id), 0) + job.captured
    ledger: list[str] = []
    for guild in guilds:
        ledger += await ledger_problems(
            pg_url,
            [(guild.id, member) for member in members],
            {u: c for (g, u), c in charged.items() if g == guild.id},
        )
    submits: dict[str, int] = {}
    for run in runflow.runs.values():
        submits[run.client_ref or ""] = submits.get(run.client_ref or "", 0) + 1
    resubmits = sum(count - 1 for count in submits.values())
    double_charges = sum(1 for job in jobs.values() if job.captures > 1 or job.releases > 1)
    lost = sum(1 for p in problems if p.category in (RESULT_LOST, CREDITS_LOST, STUCK, NOT_TOLD))
    done = sum(1 for job in jobs.values() if job.state == "done")
    most = most_open_at_once(rows)
    record_property(
        "figures",
        f"cluster: {len(interactions)} edits in {seconds:.1f} s, {len(jobs)} taken ({done} delivered, "
        f"{len(jobs) - done} refunded), {len(refused)} refused at the member limit; kills 1 "
        f"(shard {victim.shard}, holding {victim_runs} runs at the host); takeovers {takeovers}; "
        f"lost {lost}; double charges {double_charges}; resubmits {resubmits}; "
        f"most edits open at once per member {max(most.values())} (limit {PER_MEMBER})",
    )
    assert problems == []
    assert ledger == []
    assert double_charges == 0
    assert resubmits == 0
    # Every delivered edit came from the one run submitted for it.
    assert all(submits.get(f"retouch-job-{job.id}") == 1 for job in jobs.values() if job.state == "done")
    assert takeovers >= victim_runs
    assert max(most.values()) <= PER_MEMBER, most
    assert not fake.internal_errors
