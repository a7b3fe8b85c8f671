"""Bot overhead per edit: one 1-megapixel edit at a time through a zero-latency host.

An edit is timed from the moment the fake Discord sends `/edit` to the moment its ledger capture
is committed. Between those, the bot acknowledges, shows progress, reads the input from the CDN,
submits to the host, polls, downloads the result, checks it, uploads it to Discord and settles
the credits; the host answers as fast as the loopback allows.

Baseline, same run, same world: a bare discord.py bot whose `/edit` makes the same Discord,
CDN and host requests (defer, two progress edits, the input's CDN read, submit, the same poll
schedule, download, upload) and one aiosqlite insert + commit, and nothing else: no Pillow, so
the ratio is everything the bot adds to the requests any bot must make. (It used to decode and
re-encode the result too, a floor 90 ms higher than the requests' own that hid the bot's cost.)
The requests each side made per edit are in the details, to check that they match.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import discord

from bench.core import Config, Profiler, Report, Row, percentile, say, summary
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
from storage.sqlite import PRAGMAS

NAME = "overhead"
POLL = {"RETOUCH_PROVIDERS__POLL_INTERVAL": "0.005", "RETOUCH_PROVIDERS__POLL_INTERVAL_MAX": "0.02"}
MODEL = "openai/gpt-image-2/edit"
TERMINAL = {"succeeded", "failed", "canceled", "partial_succeeded"}


class MinimalEdit:
    """The floor: what any bot must do for one edit, with nothing else."""

    def __init__(self, world: World, db_path: Path) -> None:
        self.world = world
        self.db_path = db_path
        self.done: dict[int, float] = {}
        self.event = asyncio.Event()

    async def open(self) -> None:
        self.session = aiohttp.ClientSession()
        self.conn = await aiosqlite.connect(self.db_path, isolation_level=None)
        for pragma in PRAGMAS:
            await self.conn.execute(pragma)
        await self.conn.execute(
            "CREATE TABLE ledger (id INTEGER PRIMARY KEY, job_id INTEGER, kind TEXT, amount INTEGER, created_at TEXT)"
        )

    async def close(self) -> None:
        await self.session.close()
        await self.conn.close()

    async def __call__(
        self, interaction: discord.Interaction, prompt: str, image: discord.Attachment
    ) -> None:
        base, key = self.world.info["runflow_base_url"], self.world.info["runflow_api_key"]
        headers = {"Authorization": f"Bearer {key}"}
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content="⏳ Waiting in line.")
        await interaction.edit_original_response(content="⏳ Sending to the image host…")
        async with self.session.get(image.url) as reply:  # the CDN read: keep a copy of the input
            await reply.read()
        body = {
            "input": {"prompt": prompt, "image_urls": [image.url], "num_images": 1, "output_format": "png"}
        }
        async with self.session.post(f"{base}/v1/models/{MODEL}/runs", json=body, headers=headers) as reply:
            run = await reply.json()
        interval = 0.005
        while True:
            async with self.session.get(f"{base}/v1/runs/{run['id']}", headers=headers) as reply:
                run = await reply.json()
            if run["status_code"] in TERMINAL:
                break
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.02)
        async with self.session.get(run["output"]["outputs"][0]["url"]) as reply:
            data = await reply.read()
        await interaction.edit_original_response(
            content="✅ Edit", attachments=[discord.File(io.BytesIO(data), filename="result.png")]
        )
        await self.conn.execute("BEGIN IMMEDIATE")
        await self.conn.execute(
            "INSERT INTO ledger (job_id, kind, amount, created_at) VALUES (?, 'capture', -14, ?)",
            (interaction.id, "2026-01-01T00:00:00+00:00"),
        )
        await self.conn.commit()
        self.done[interaction.id] = time.monotonic()
        self.event.set()


async def _sequential(world: World, member: int, count: int, finished: Any) -> list[tuple[float, float]]:
    """Send `count` edits one after the other; [(sent_at, finished_at)] from `finished(n)`."""
    spans = []
    for n in range(count):
        [sent] = await world.edit([member], "photo")
        end = await finished(n, sent)
        spans.append((sent["sent_at"], end))
    return spans


def _stages(timeline: list[list[Any]], spans: list[tuple[float, float]]) -> dict[str, Any]:
    """Per edit, when each step's request reached the fakes, as offsets from the /edit."""
    marks: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    for sent, end in spans:
        inside = [(t, fake, route, files) for t, fake, route, files in timeline if sent <= t <= end]
        first: dict[str, float] = {}
        seen: dict[str, int] = {}
        for t, fake, route, files in inside:
            kind = f"{fake} {route}" + (" +file" if files else "")
            first.setdefault(kind, t - sent)
            seen[kind] = seen.get(kind, 0) + 1
        first["ledger capture committed"] = end - sent
        for kind, offset in first.items():
            marks.setdefault(kind, []).append(offset)
        for kind, n in seen.items():
            counts.setdefault(kind, []).append(n)
    return {
        "first_arrival_ms_p50": {k: round(percentile(v, 50) * 1000, 2) for k, v in marks.items()},
        "requests_per_edit": {k: round(sum(v) / len(spans), 2) for k, v in counts.items()},
    }


async def _measure_retouch(cfg: Config, warmup: int, count: int, data: Path) -> dict[str, Any]:
    async with await World.start() as world:
        running = await start_retouch(retouch_settings(world, data, {**wide_open(), **POLL}))
        settled = time_settlements(running.bot)
        [member] = await world.members(1)
        await world.cdn("photo", 1024, 1024)

        async def finished(n: int, sent: dict[str, Any]) -> float:
            await settled.wait_count(len(settled.at) + 1, timeout=60)
            return max(settled.at.values())

        try:
            with time_fits() as fits:
                await _sequential(world, member, warmup, finished)
                spans = await _sequential(world, member, count, finished)
                profile = None
                if cfg.profile:
                    async with Profiler() as profiler:
                        await _sequential(world, member, count, finished)
                    profile = profiler.summary()
            timeline = await world.call("timeline", since=spans[0][0])
        finally:
            await running.stop()
    fit_seconds = [end - start for start, end, _ in fits.calls if end is not None]
    return {
        "spans": spans,
        "stages": _stages(timeline, spans),
        "fit_under_ms": summary(fit_seconds, 1000),
        "profile": profile,
    }


async def _measure_minimal(warmup: int, count: int, data: Path) -> dict[str, Any]:
    async with await World.start() as world:
        minimal = MinimalEdit(world, data / "minimal.db")
        await minimal.open()
        bot, task = await start_bare(world, minimal)
        [member] = await world.members(1)
        await world.cdn("photo", 1024, 1024)

        async def finished(n: int, sent: dict[str, Any]) -> float:
            async with asyncio.timeout(60):
                while sent["id"] not in minimal.done:
                    minimal.event.clear()
                    await minimal.event.wait()
            return minimal.done[sent["id"]]

        try:
            await _sequential(world, member, warmup, finished)
            spans = await _sequential(world, member, count, finished)
            timeline = await world.call("timeline", since=spans[0][0])
        finally:
            await stop_client(bot, task)
            await minimal.close()
    return {
        "spans": spans,
        "stages": _stages(timeline, spans),
    }


def _latencies(spans: list[tuple[float, float]]) -> list[float]:
    return [end - sent for sent, end in spans]


async def run(cfg: Config) -> Report:
    warmup, count = cfg.pick(1, 3), cfg.pick(4, 50)
    report = Report(NAME)
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as data:
        say(f"baseline: minimal bot (the same requests, no Pillow), {count} sequential 1 MP edits")
        minimal = await _measure_minimal(warmup, count, Path(data))
        say(f"retouch: {count} sequential 1 MP edits")
        retouch = await _measure_retouch(cfg, warmup, count, Path(data))
    bot, floor = _latencies(retouch["spans"]), _latencies(minimal["spans"])
    median, base = percentile(bot, 50) * 1000, percentile(floor, 50) * 1000
    report.rows = [
        Row(
            NAME,
            "per-edit time, 1 MP, zero-latency host (median)",
            median,
            "ms",
            base,
            goal="< 25 ms",
            met=median < 25,
        ),
    ]
    report.details = {
        "edits": count,
        "poll_interval_s": "0.005 → 0.02 (×1.5), the same for both",
        "retouch_ms": summary(bot, 1000),
        "baseline_ms": summary(floor, 1000),
        "retouch_stages": retouch["stages"],
        "baseline_stages": minimal["stages"],
        "retouch_fit_under_ms": retouch["fit_under_ms"],
    }
    if retouch["profile"] is not None:
        report.profile = {"note": f"an extra {count} profiled edits (figures not used)", **retouch["profile"]}
    return report
