"""Throughput: edits completed per second with a zero-latency host and 200 edits in flight.

200 `/edit`s (1-megapixel inputs, 200 members) are sent at once and the line is topped up as
edits complete, so about 200 stay in flight until the total is sent. An edit is complete when
its ledger capture commits. The figure is the steady-state rate (completions between 20 % and
80 % of the total, over the time that took); the overall rate includes ramp-up and drain.

No baseline is asked for; the CPU seconds per edit of the bot's process and of the world
process (the fakes, on the same two cores) say where the cores went.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.core import Config, LoopLag, Profiler, Report, Row, cpu_seconds, say, summary
from bench.harness import World, retouch_settings, start_retouch, time_settlements, wide_open

NAME = "throughput"


async def _drive(
    world: World, settled: Any, members: list[int], total: int, in_flight: int
) -> dict[str, Any]:
    """Keep `in_flight` edits going until `total` have been sent; wait for them to complete."""
    sent_at: list[float] = []
    batch = max(1, in_flight // 20)
    before = len(settled.at)
    lost = 0  # /edits that never became jobs (not acknowledged in time): no longer in flight
    async with asyncio.timeout(900):
        while len(sent_at) < total:
            room = in_flight - (len(sent_at) - lost - (len(settled.at) - before))
            if room >= batch or not sent_at:
                n = min(room, total - len(sent_at))
                users = [members[(len(sent_at) + i) % len(members)] for i in range(n)]
                sent_at += [item["sent_at"] for item in await world.edit(users, "photo")]
                continue
            settled.changed.clear()
            try:
                await asyncio.wait_for(settled.changed.wait(), 10)
            except TimeoutError:
                lost += batch  # nothing completes: assume a batch was lost and keep the line full
    await settled.wait_quiet(before + total)
    return {"sent_at": sent_at}


def steady_rates(sent_at: list[float], done_at: list[float]) -> dict[str, float]:
    done = sorted(done_at)
    n = len(done)
    if n < 5:
        return {"completed": n}
    low, high = done[int(n * 0.2)], done[int(n * 0.8) - 1]
    return {
        "completed": n,
        "steady_per_s": round((int(n * 0.8) - int(n * 0.2) - 1) / (high - low), 2) if high > low else 0.0,
        "overall_per_s": round(n / (done[-1] - min(sent_at)), 2),
        "wall_s": round(done[-1] - min(sent_at), 2),
    }


async def run(cfg: Config) -> Report:
    in_flight, total = cfg.pick(20, 200), cfg.pick(40, 800)
    report = Report(NAME)
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as data:
        async with await World.start() as world:
            running = await start_retouch(
                retouch_settings(world, Path(data), wide_open(concurrency=in_flight))
            )
            settled = time_settlements(running.bot)
            try:
                members = await world.members(in_flight)
                await world.cdn("photo", 1024, 1024)
                warm = cfg.pick(4, 20)
                say(f"warm-up: {warm} edits")
                await _drive(world, settled, members, warm, warm)
                say(f"{total} edits, {in_flight} in flight")
                first = len(settled.at)
                cpu_bot, cpu_world = cpu_seconds(), cpu_seconds(world.pid)
                with LoopLag() as lag:
                    driven = await _drive(world, settled, members, total, in_flight)
                cpu_bot, cpu_world = cpu_seconds() - cpu_bot, cpu_seconds(world.pid) - cpu_world
                done_at = sorted(settled.at.values())[first:]
                rates = steady_rates(driven["sent_at"], done_at)
                latencies = _latencies(driven["sent_at"], done_at)
                stats = await world.stats()  # before the profiled pass, whose slowness would add misses
                profile = None
                if cfg.profile:
                    say("an extra profiled pass")
                    async with Profiler() as profiler:
                        await _drive(world, settled, members, in_flight, in_flight)
                    profile = profiler.summary()
            finally:
                await running.stop()
    rate = rates.get("steady_per_s", 0.0)
    completed = rates.get("completed", 0)
    report.rows = [
        Row(
            NAME,
            f"edits/s, zero-latency host, {in_flight} in flight (steady state)",
            rate,
            "edits/s",
            goal="≥ 50 edits/s on 2 cores",
            met=rate >= 50,
            higher_is_better=True,
            label=f"{os.cpu_count()} cores",
        ),
        Row(
            NAME,
            "… /edits not acknowledged within Discord's 3 s meanwhile",
            float(stats["unanswered"]),
            f"of {total + warm}",
            goal="0",
            met=stats["unanswered"] == 0,
        ),
    ]
    report.details = {
        **rates,
        "sent": total,
        "in_flight": in_flight,
        "bot_cpu_ms_per_edit": round(cpu_bot / max(1, completed) * 1000, 2),
        "world_cpu_ms_per_edit": round(cpu_world / max(1, completed) * 1000, 2),
        "bot_cpu_utilisation": round(cpu_bot / max(1e-9, rates.get("wall_s", 1)), 2),
        "loop_lag_ms": lag.summary(),
        "edit_latency_s_rough": latencies,
        "world": {k: stats[k] for k in ("discord", "runflow", "run_status", "unanswered", "internal_errors")},
        "interactions_not_acknowledged_within_3s": stats["unanswered"],
    }
    if profile is not None:
        report.profile = {"note": "an extra profiled pass (figures not used)", **profile}
    return report


def _latencies(sent_at: list[float], done_at: list[float]) -> dict[str, float]:
    """Sent and completed times are not paired per edit; the i-th of each in order is close enough."""
    pairs = [d - s for s, d in zip(sorted(sent_at), sorted(done_at), strict=False)]
    return summary(pairs)
