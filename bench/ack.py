"""Interaction acknowledgement: how long 200 simultaneous `/edit`s wait for their first answer.

Latency is measured by the fake Discord (in the world process): from the moment it wrote the
INTERACTION_CREATE frame to the moment the bot's callback request reached it. Discord shows
"The application did not respond" after 3 s; the goal keeps p99 far from that.

Baseline, same run: a bare discord.py bot whose `/edit` only defers. Retouch is measured while
4K results are being fitted under the upload limit (big edits are started first and the burst
waits until `fit_under` is running), because CPU-heavy image work must not stall the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import discord

import cogs.flow
from bench.core import Config, LoopLag, Profiler, Report, Row, percentile, say, summary
from bench.harness import (
    World,
    retouch_settings,
    start_bare,
    start_retouch,
    stop_client,
    time_fits,
    time_settlements,
    wide_open,
)
from storage.sqlite import SqliteDatabase

NAME = "ack"
BIG_EDITS = 2


async def _defer_only(interaction: discord.Interaction, prompt: str, image: discord.Attachment) -> None:
    await interaction.response.defer(thinking=True)


async def _burst(world: World, members: list[int]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    await world.call("loop_lag")  # reset: measure the fakes' own lateness during the burst only
    with LoopLag() as lag:
        sent = await world.edit(members, "small")
        acks = await world.acks([s["id"] for s in sent])
    for ack, item in zip(acks, sent, strict=True):
        ack["sent_at"], ack["token"] = item["sent_at"], item["token"]
    return acks, {"bot": lag.summary(), "world": await world.call("loop_lag")}


class TimedLock(asyncio.Lock):
    """The database's transaction lock, timed: how long each acquire waited and each hold lasted."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.holds: list[float] = []
        self.most_waiting = 0
        self._acquired_at = 0.0

    async def acquire(self) -> Literal[True]:
        started = time.monotonic()
        self.most_waiting = max(self.most_waiting, len(self._waiters or ()) + (1 if self.locked() else 0))
        result = await super().acquire()
        self._acquired_at = time.monotonic()
        self.waits.append(self._acquired_at - started)
        return result

    def release(self) -> None:
        self.holds.append(time.monotonic() - self._acquired_at)
        super().release()

    def summary(self) -> dict[str, Any]:
        return {
            "transactions": len(self.holds),
            "wait_ms": summary(self.waits, 1000),
            "hold_ms": summary(self.holds, 1000),
            "most_waiting_at_once": self.most_waiting,
        }


class AckPath:
    """When each /edit went through the awaited steps before its acknowledgement.

    `JobService.note` (the journal of acknowledged edits), `preflight` (limits, block, balance)
    and `create` (the job row and credit reservation), where the product has them, are timed per
    interaction token, and so is the call of `cogs.flow.open_status` (the defer). With the world's send and callback times, that
    splits an acknowledgement into stages. A function the product no longer has is skipped.
    """

    STEPS = ("note", "preflight", "create")

    def __init__(self, bot: Any) -> None:
        self.spans: dict[str, dict[str, tuple[float, float]]] = {step: {} for step in self.STEPS}
        self.deferring: dict[str, float] = {}
        self._flow_open_status = getattr(cogs.flow, "open_status", None)
        for step in self.STEPS:
            original = getattr(bot.jobs, step, None)
            if original is not None:
                setattr(bot.jobs, step, self._timed(step, original))
        if self._flow_open_status is not None:
            original_open = self._flow_open_status

            async def open_status(interaction: Any, *args: Any, **kwargs: Any) -> Any:
                self.deferring[interaction.token] = time.monotonic()
                return await original_open(interaction, *args, **kwargs)

            cogs.flow.open_status = open_status

    def _timed(self, step: str, original: Any) -> Any:
        async def timed(order: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return await original(order, *args, **kwargs)
            finally:
                self.spans[step][order.interaction_token] = (started, time.monotonic())

        return timed

    def restore(self) -> None:
        if self._flow_open_status is not None:
            cogs.flow.open_status = self._flow_open_status

    def split(self, acks: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
        """Per interaction, its events in time order; each step between two is one stage.

        The order is whatever the product does (it may defer before or after the database
        work), so stages are named by the events that bound them, and only the steps up to the
        callback's arrival (the acknowledgement) are kept.
        """
        stages: dict[str, list[float]] = {}
        for ack in acks:
            token, latency = ack["token"], ack["latency"]
            if latency is None:
                continue
            events = [("/edit sent", ack["sent_at"]), ("callback reaches Discord", ack["sent_at"] + latency)]
            for step in self.STEPS:
                if token in self.spans[step]:
                    started, ended = self.spans[step][token]
                    events += [(f"{step} starts", started), (f"{step} ends", ended)]
            if token in self.deferring:
                events.append(("defer starts", self.deferring[token]))
            events.sort(key=lambda event: event[1])
            for (name, at), (next_name, next_at) in itertools.pairwise(events):
                stages.setdefault(f"{name} → {next_name}", []).append(next_at - at)
                if next_name == "callback reaches Discord":
                    break
        return {name: summary(values, 1000) for name, values in stages.items()}


async def _baseline(cfg: Config, count: int, rounds: int) -> tuple[list[float], dict[str, Any]]:
    async with await World.start() as world:
        bot, task = await start_bare(world, _defer_only)
        try:
            members = await world.members(count)
            await world.cdn("small", 512, 512)
            latencies: list[float] = []
            lags = []
            late = 0
            for _ in range(rounds):
                acks, lag = await _burst(world, members)
                latencies += [a["latency"] for a in acks if a["latency"] is not None]
                late += sum(1 for a in acks if a["status"] != 200)
                lags.append(lag)
        finally:
            await stop_client(bot, task)
    return latencies, {"loop_lag_ms": lags, "late_or_failed": late}


async def _retouch(cfg: Config, count: int, rounds: int, data: Path) -> dict[str, Any]:
    # Quick mode fits 2048² results under a 2 MiB limit instead of 4096² under 10 MiB: the same
    # code path in a fraction of the time.
    limit, side = cfg.pick(2 * 1024 * 1024, 10 * 1024 * 1024), cfg.pick(2048, 4096)
    async with await World.start(upload_limit=limit) as world:
        settings = retouch_settings(world, data, wide_open(concurrency=count + BIG_EDITS))
        running = await start_retouch(settings)
        settled = time_settlements(running.bot)
        path = AckPath(running.bot)
        lock = TimedLock()
        if isinstance(running.bot.db, SqliteDatabase):
            running.bot.db.lock = lock  # one Database, one lock: swapped while nothing holds it
        all_acks: list[dict[str, Any]] = []
        result: dict[str, Any] = {"latencies": [], "rounds": [], "profile": None}
        try:
            members = await world.members(count + BIG_EDITS)
            big_users, users = members[:BIG_EDITS], members[BIG_EDITS:]
            await world.cdn("small", 512, 512)
            await world.cdn("big", side, side, grain=4.0)  # 4096²: ~18 MiB PNG, its result needs fitting
            with time_fits() as fits:
                for round_no in range(rounds + (1 if cfg.profile else 0)):
                    profiled = round_no == rounds
                    before = len(fits.calls)
                    jobs_before = len(settled.at)
                    await world.edit(big_users, "big")
                    await fits.wait_running(after=before, larger_than=limit, timeout=120)
                    async with Profiler(profiled) as profiler:
                        acks, lag = await _burst(world, users)
                    window = (
                        min(a["sent_at"] for a in acks),
                        max(a["sent_at"] + (a["latency"] or 0) for a in acks),
                    )
                    latencies = [a["latency"] for a in acks if a["latency"] is not None]
                    info = {
                        "ack_ms": summary(latencies, 1000),
                        "loop_lag_ms": lag,
                        "fits_running_during_burst": fits.active_between(*window),
                        "answer_types": sorted({a["type"] for a in acks if a["type"] is not None}),
                        "late_or_failed": sum(1 for a in acks if a["status"] != 200),
                    }
                    if profiled:
                        result["profile"] = {
                            "note": "an extra, profiled burst (its figures are not used)",
                            **(profiler.summary() or {}),
                        }
                        result["profiled_round"] = info
                    else:
                        result["latencies"] += latencies
                        result["rounds"].append(info)
                        all_acks += acks
                    say(f"retouch round {round_no + 1}: p99 {percentile(latencies, 99) * 1000:.0f} ms")
                    # The next round starts clean, and stopping the bot never cuts an edit short.
                    await settled.wait_quiet(jobs_before + count + BIG_EDITS)
            result["fits"] = [
                {"seconds": round(end - start, 3), "bytes": size} for start, end, size in fits.calls if end
            ][:10]
            result["world"] = await world.stats()
            result["ack_path_ms"] = path.split(all_acks)
            result["transaction_lock_whole_run"] = lock.summary()
        finally:
            path.restore()
            await running.stop()
    return result


async def run(cfg: Config) -> Report:
    count = cfg.pick(40, 200)
    rounds = cfg.pick(1, 3)
    report = Report(NAME)
    say(f"baseline: bare discord.py bot, {rounds} × {count} simultaneous /edit")
    base, base_info = await _baseline(cfg, count, rounds)
    say(f"retouch: {rounds} × {count} simultaneous /edit while 4K results are fitted")
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as data:
        retouch = await _retouch(cfg, count, rounds, Path(data))
    lat = retouch["latencies"]
    p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
    b50, b99 = percentile(base, 50) * 1000, percentile(base, 99) * 1000
    label = f"{count} simultaneous" + ("" if count == 200 else " (quick)")
    report.rows = [
        Row(NAME, f"ack p50, {label} /edit", p50, "ms", b50, goal="(informational)", label=""),
        Row(
            NAME,
            f"ack p99, {label} /edit",
            p99,
            "ms",
            b99,
            goal="≤ 1.5× baseline and < 100 ms",
            met=p99 <= 1.5 * b99 and p99 < 100,
        ),
        Row(
            NAME,
            "/edits not acknowledged within Discord's 3 s",
            float(sum(r["late_or_failed"] for r in retouch["rounds"])),
            f"of {count * rounds}",
            float(base_info["late_or_failed"]),
            goal="0",
            met=sum(r["late_or_failed"] for r in retouch["rounds"]) == 0,
        ),
    ]
    report.details = {
        "simultaneous": count,
        "rounds": rounds,
        "background_fits": f"{BIG_EDITS} edits of a {cfg.pick(2048, 4096)}² photo, results fitted under "
        f"{cfg.pick(2, 10)} MiB, started before each burst",
        "retouch": {k: v for k, v in retouch.items() if k not in ("latencies", "profile")},
        "retouch_ack_ms": summary(lat, 1000),
        "baseline_ack_ms": summary(base, 1000),
        "baseline": base_info,
    }
    if report.missed and retouch["profile"]:
        report.profile = retouch["profile"]
        report.profile["summary"] = [
            "where an acknowledgement's time went (median / p99 ms over the measured bursts; note = "
            "journal entry, preflight = limits, block, balance; create = job row + credit reservation):",
            *(
                f"  {stats.get('p50', 0):7.1f} / {stats.get('p99', 0):7.1f}  {stage}"
                for stage, stats in retouch["ack_path_ms"].items()
            ),
            "event-loop lateness during the bursts, p99 ms per round — Retouch: bot {rb}, fakes {rw}; "
            "bare bot: bot {bb}, fakes {bw}".format(
                rb=[r["loop_lag_ms"]["bot"].get("p99") for r in retouch["rounds"]],
                rw=[r["loop_lag_ms"]["world"].get("p99") for r in retouch["rounds"]],
                bb=[r["bot"].get("p99") for r in base_info["loop_lag_ms"]],
                bw=[r["world"].get("p99") for r in base_info["loop_lag_ms"]],
            ),
            "the database's transaction lock over the whole run (every transaction in the bot):",
            "  {transactions} transactions; wait p50 {w50} / p99 {w99} ms; held p50 {h50} / p99 {h99} ms; "
            "up to {most} waiting at once".format(
                transactions=retouch["transaction_lock_whole_run"]["transactions"],
                w50=retouch["transaction_lock_whole_run"]["wait_ms"].get("p50"),
                w99=retouch["transaction_lock_whole_run"]["wait_ms"].get("p99"),
                h50=retouch["transaction_lock_whole_run"]["hold_ms"].get("p50"),
                h99=retouch["transaction_lock_whole_run"]["hold_ms"].get("p99"),
                most=retouch["transaction_lock_whole_run"]["most_waiting_at_once"],
            ),
        ]
    return report
