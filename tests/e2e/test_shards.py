"""Two bots, each running one of two gateway shards over one store, against a fake Discord that
routes each guild's events to its shard and DMs to shard 0, as Discord does.

The queue is still per process, so an edit is carried by the process that received it; what is
shared here is the command sync (once for the cluster) and the database a restarted process
recovers from.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cogs.app import Retouch, ShardedRetouch
from storage.store import open_db
from tests.e2e.conftest import InProcessBot, env_for, settings_for
from tests.e2e.helpers import has_image
from tests.e2e.test_command_sync import command_puts
from tests.fakes.discord import FakeDiscord, Guild
from tests.fakes.runflow import FakeRunflow
from tests.images import png


@pytest.fixture
def fake_shards() -> int:
    return 2


class Cluster:
    def __init__(self, fake: FakeDiscord, first: InProcessBot, second: InProcessBot, far: Guild) -> None:
        self.fake, self.processes, self.far = fake, (first, second), far

    def bot(self, shard: int) -> Retouch:
        bot = self.processes[shard].bot
        assert bot is not None
        return bot


def edits_done(bot: Retouch) -> float:
    """Edits this process carried to the end (its own metrics registry)."""
    return sum(
        sample.value
        for metric in bot.metrics.registry.collect()
        if metric.name == "retouch_edits"
        for sample in metric.samples
        if sample.name == "retouch_edits_total" and sample.labels["state"] == "done"
    )


@pytest.fixture
async def cluster(
    discord_fake: FakeDiscord, runflow: FakeRunflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    """Shard 0 (the first guild, DMs) in one process and shard 1 (another guild) in the other,
    started at once over one database (migrated first, as `python -m bot migrate` would)."""
    far = discord_fake.add_guild("Far", shard=1)
    await (await open_db(tmp_path / "retouch.db")).close()
    processes = []
    for shard in (0, 1):
        overrides = {
            "RETOUCH_DISCORD__SHARD_COUNT": "2",
            "RETOUCH_DISCORD__SHARD_IDS": f"[{shard}]",
            "RETOUCH_STORAGE__FILES_DIR": str(tmp_path / f"files-{shard}"),
            "RETOUCH_EDITING__ALLOW_DMS": "true",
            "RETOUCH_CREDITS__DM_ALLOWANCE": "100",
        }
        env = env_for(discord_fake, runflow, tmp_path, overrides)
        processes.append(InProcessBot(discord_fake, settings_for(env, monkeypatch)))
    first, second = processes
    await asyncio.gather(first.start(), second.start())
    yield Cluster(discord_fake, first, second, far)
    await asyncio.gather(first.stop(), second.stop())
    assert not discord_fake.internal_errors


async def test_processes_starting_at_once_sync_commands_once(cluster: Cluster) -> None:
    fake = cluster.fake
    assert command_puts(fake) == 1
    assert sorted(fake.identified_shards) == [(0, 2), (1, 2)]
    assert all(isinstance(cluster.bot(shard), ShardedRetouch) for shard in (0, 1))
    assert [guild.id for guild in cluster.bot(0).guilds] == [fake.guild_id]
    assert [guild.id for guild in cluster.bot(1).guilds] == [cluster.far.id]


@pytest.mark.parametrize("shard", [0, 1])
async def test_an_edit_is_answered_by_the_process_holding_its_guilds_shard(
    cluster: Cluster, runflow: FakeRunflow, shard: int
) -> None:
    fake = cluster.fake
    guild = fake.guilds[fake.guild_id] if shard == 0 else cluster.far
    image = fake.add_cdn_file(png(), "p.png")
    interaction = await fake.slash(
        "edit", in_guild=guild, prompt="brighter", image=image, user=guild.member_id
    )
    assert interaction.shard == shard
    assert (await interaction.wait_response())["type"] == 5
    result = await fake.wait_for_message(has_image)
    assert result["channel_id"] == str(guild.channel_id)
    job = await cluster.bot(shard).jobs.wait_settled(1)
    assert job.guild_id == guild.id
    # Run once, by either process: the line is shared, and on PostgreSQL both are woken for it.
    assert edits_done(cluster.bot(shard)) + edits_done(cluster.bot(1 - shard)) == 1


async def test_a_dm_reaches_the_process_holding_shard_0(cluster: Cluster) -> None:
    fake = cluster.fake
    image = fake.add_cdn_file(png(), "p.png")
    interaction = await fake.slash("edit", dm=True, prompt="brighter", image=image)
    assert interaction.shard == 0
    result = await fake.wait_for_message(has_image)
    assert result["channel_id"] == str(fake.dm_channel_id())
    await cluster.bot(0).jobs.wait_settled(1)
    assert edits_done(cluster.bot(0)) + edits_done(cluster.bot(1)) == 1


async def test_a_process_delivers_an_edit_in_a_guild_it_holds_no_shard_of(
    cluster: Cluster, runflow: FakeRunflow
) -> None:
    """The process of shard 1 takes an edit and stops mid-run; the process of shard 0, restarted,
    recovers it from the shared store and delivers it into a guild it has never seen (no channel
    in its cache), through REST alone."""
    fake, far = cluster.fake, cluster.far
    first, second = cluster.processes
    runflow.hold = True
    image = fake.add_cdn_file(png(), "p.png")
    interaction = await fake.slash("edit", in_guild=far, prompt="brighter", image=image, user=far.member_id)
    assert interaction.shard == 1
    run = await runflow.wait_for_run()
    # The bot polls a run only once it has recorded it; stopped before, it would submit again.
    await runflow.wait_until(lambda: run.polls or None, "the run's first poll")
    await second.stop()
    await first.restart()
    runflow.release()
    result = await fake.wait_for_message(has_image)
    assert result["channel_id"] == str(far.channel_id)
    recovering = cluster.bot(0)
    job = await recovering.jobs.wait_settled(1)
    assert job.guild_id == far.id and recovering.get_guild(far.id) is None
    assert edits_done(recovering) == 1
    # The member's "thinking" message became the pointer to the result, through the webhook.
    await fake.wait_for_message(
        lambda m: int(m["id"]) == interaction.original_id and result["id"] in m["content"]
    )
    await second.start()
