"""Memory: the bot's RSS with 200 edits in flight on a slow host whose outputs are 4K images.

Phases, each in the same bot process (the fakes live in the world process, so their stored
uploads never count):

1. idle — the bot is ready and has done nothing (the baseline);
2. in flight — 200 `/edit`s are submitted and the host holds every run (a slow host): what
   200 waiting edits cost;
3. results — the host releases all 200 runs at once; each output is a 4096×4096 PNG of ~9.5 MiB
   (under Discord's 10 MiB limit, so this measures holding and streaming, not the re-encode that
   the fit benchmark times). The bot downloads, checks, stores and uploads them.

Peaks are read from VmHWM (reset at the start of each phase), cross-checked by sampling RSS
every 20 ms. `FileStore.download` (and `download_to`, where it exists) is wrapped to record each
result download's size, duration and whether it gathered the body in memory or streamed it to a
file.

Inputs are 1-megapixel photos (the host is told to answer every run with the fixed 4K output),
so the input side of each edit stays cheap; the goal is about outputs.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.core import MB, Config, LoopLag, Report, Row, peak_rss, reset_peak_rss, rss, say
from bench.harness import World, retouch_settings, start_retouch, time_settlements, wide_open
from bot.pictures import images as bot_images

NAME = "memory"
POLL = {"RETOUCH_PROVIDERS__POLL_INTERVAL": "0.05", "RETOUCH_PROVIDERS__POLL_INTERVAL_MAX": "0.5"}


class RssSampler:
    """The highest RSS seen by a 20 ms sampler (VmHWM says the same when it can be reset)."""

    def __init__(self) -> None:
        self.highest = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.highest = max(self.highest, rss())
            await asyncio.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self.highest = rss()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self.highest = max(self.highest, rss())
        if self._task is not None:
            self._task.cancel()


class Downloads:
    """Every FileStore download of a result: (start, end, bytes, how it was kept, is an output).

    `download` returns the whole body as bytes (held in memory); `download_to`, where the
    product has it, streams the body into a file and returns its size. Both are wrapped.
    """

    def __init__(self, files: Any, output_prefix: str) -> None:
        self.calls: list[tuple[float, float, int, str, bool]] = []
        for name in ("download", "download_to"):
            original = getattr(files, name, None)
            if original is not None:
                setattr(files, name, self._wrap(original, name, output_prefix))

    def _wrap(self, original: Any, name: str, prefix: str) -> Any:
        async def download(session: Any, url: str, *args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            result = await original(session, url, *args, **kwargs)
            if isinstance(result, bytes | bytearray):
                size, kind = len(result), "bytes in memory"
            else:
                size, kind = (result if isinstance(result, int) else -1), f"streamed to a file ({name})"
            self.calls.append((started, time.monotonic(), size, kind, url.startswith(prefix)))
            return result

        return download

    def outputs(self) -> list[tuple[float, float, int, str, bool]]:
        return [call for call in self.calls if call[4]]

    def peak_in_flight(self) -> tuple[int, int]:
        """Most output downloads under way at once, and the bytes they gather in memory then."""
        events = sorted(
            [(start, 1, size, kind) for start, _, size, kind, out in self.calls if out]
            + [(end, -1, size, kind) for _, end, size, kind, out in self.calls if out]
        )
        count = held = best_count = best_held = 0
        for _, step, size, kind in events:
            count += step
            held += step * max(size, 0) if kind == "bytes in memory" else 0
            best_count, best_held = max(best_count, count), max(best_held, held)
        return best_count, best_held


class ImageWork:
    """How many `bot.pictures.images` calls (each holding a decoded picture) ran at once, at most.

    Only outermost calls count: `fit_under` and `normalize` call `inspect` themselves.
    """

    NAMES = ("inspect", "normalize", "fit_under")

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, str]] = []
        self._originals: dict[str, Any] = {}
        self._depth = threading.local()

    def __enter__(self) -> ImageWork:
        for name in self.NAMES:
            original = getattr(bot_images, name, None)
            if original is None:
                continue
            self._originals[name] = original

            def timed(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
                depth = getattr(self._depth, "value", 0)
                self._depth.value = depth + 1
                started = time.monotonic()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self._depth.value = depth
                    if depth == 0:
                        self.calls.append((started, time.monotonic(), _name))

            setattr(bot_images, name, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._originals.items():
            setattr(bot_images, name, original)

    def most_at_once(self) -> int:
        events = sorted([(s, 1) for s, _, _ in self.calls] + [(e, -1) for _, e, _ in self.calls])
        running = best = 0
        for _, step in events:
            running += step
            best = max(best, running)
        return best


class Snapshots:
    """tracemalloc snapshots taken when RSS reaches a new high (at most one a second)."""

    def __init__(self) -> None:
        self.best: tuple[int, tracemalloc.Snapshot, int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = 0.0
        while True:
            current = rss()
            if (self.best is None or current > self.best[0]) and time.monotonic() - last > 1.0:
                traced = tracemalloc.get_traced_memory()[0]
                self.best = (current, tracemalloc.take_snapshot(), traced)
                last = time.monotonic()
            await asyncio.sleep(0.05)

    def __enter__(self) -> Snapshots:
        tracemalloc.start(8)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        tracemalloc.stop()

    def summary(self, limit: int = 10) -> dict[str, Any]:
        if self.best is None:
            return {}
        current, snapshot, traced = self.best
        top = snapshot.statistics("traceback")[:limit]
        sites = []
        for stat in top:
            frames = [f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback]
            product = [f for f in stat.traceback if _is_product_file(f.filename)]
            where = f"{Path(product[-1].filename).name}:{product[-1].lineno}" if product else frames[-1]
            sites.append(
                {"mb": round(stat.size / MB, 1), "count": stat.count, "via": where, "stack": frames[-4:]}
            )
        return {
            "rss_at_snapshot_mb": round(current / MB, 1),
            "python_objects_traced_mb": round(traced / MB, 1),
            "untraced_mb": round((current - traced) / MB, 1),
            "largest_allocation_sites": sites,
        }


def _is_product_file(filename: str) -> bool:
    return any(f"/{part}/" in filename for part in ("bot", "cogs", "storage")) and ".venv" not in filename


async def _settle_rss(seconds: float = 1.0) -> int:
    gc.collect()
    samples = []
    for _ in range(5):
        await asyncio.sleep(seconds / 5)
        samples.append(rss())
    return sorted(samples)[len(samples) // 2]


async def _phases(world: World, members: list[int], settled: Any, count: int) -> dict[str, Any]:
    """Submit `count` edits against a holding host, then release them all; RSS peaks of each."""
    before, runs_before = len(settled.at), (await world.stats())["runs"]
    await world.call("host", hold=True)
    reset_peak_rss()
    with RssSampler() as sampled:
        sent = await world.edit(members[:count], "photo")
        acks = await world.acks([item["id"] for item in sent])
        accepted = sum(1 for ack in acks if ack["status"] == 200)
        await world.call("wait_runs", count=runs_before + accepted, status="running", timeout=600)
        in_flight = await _settle_rss()
    submit_peak = max(peak_rss(), sampled.highest)
    say(f"release: {count} results at once")
    reset_peak_rss()
    started = time.monotonic()
    with ImageWork() as work, RssSampler() as sampled, LoopLag(0.05) as lag:
        await world.call("host", release=True, hold=False)
        await settled.wait_quiet(before + accepted, quiet=60, timeout=1800)
    return {
        "not_acknowledged_within_3s": count - accepted,
        "loop_lag_ms": lag.summary(),
        "in_flight": in_flight,
        "submit_peak": submit_peak,
        "results_peak": max(peak_rss(), sampled.highest),
        "results_s": round(time.monotonic() - started, 1),
        "after": await _settle_rss(),
        "image_calls_at_once": work.most_at_once(),
        "image_calls": len(work.calls),
    }


async def run(cfg: Config) -> Report:
    count = cfg.pick(6, 200)
    side = cfg.pick(2048, 4096)
    report = Report(NAME)
    details: dict[str, Any] = {"edits": count}
    with tempfile.TemporaryDirectory(dir=cfg.workdir) as data:
        async with await World.start() as world:
            settings = retouch_settings(world, Path(data), {**wide_open(concurrency=count), **POLL})
            running = await start_retouch(settings)
            settled = time_settlements(running.bot)
            files = getattr(getattr(running.bot.jobs, "_core", None), "files", None)
            downloads = Downloads(files, world.info["runflow_base_url"]) if files is not None else None
            try:
                members = await world.members(count)
                await world.cdn("photo", 1024, 1024)
                host = await world.call("host", output={"width": side, "height": side, "grain": 1.0})
                details["output_png_mib"] = round(host["output_bytes"] / MB, 2)
                say("idle")
                idle = await _settle_rss()
                say(f"{count} edits submitted, the host holds every run")
                phases = await _phases(world, members, settled, count)
                download_calls = list(downloads.calls) if downloads is not None else []
                traced = None
                if cfg.profile:
                    extra = min(count, 50)
                    say(f"an extra traced pass of {extra} edits (tracemalloc; its figures are not used)")
                    with Snapshots() as snapshots:
                        await _phases(world, members, settled, extra)
                    traced = snapshots.summary()
            finally:
                await running.stop()
    in_flight = phases["in_flight"]
    peak = max(phases["submit_peak"], phases["results_peak"])
    details.update(
        {
            "idle_mb": round(idle / MB, 1),
            "in_flight_held_mb": round(in_flight / MB, 1),
            "submit_phase_peak_mb": round(phases["submit_peak"] / MB, 1),
            "results_phase_peak_mb": round(phases["results_peak"] / MB, 1),
            "results_phase_s": phases["results_s"],
            "after_all_done_mb": round(phases["after"] / MB, 1),
            "image_calls_at_once_max": phases["image_calls_at_once"],
            "image_calls": phases["image_calls"],
            "results_phase_event_loop_lag_ms": phases["loop_lag_ms"],
            "edits_not_acknowledged_within_3s": phases["not_acknowledged_within_3s"],
        }
    )
    rows = [
        Row(
            NAME,
            f"peak RSS, {count} edits in flight until their {side}² results are delivered",
            peak / MB,
            "MB",
            idle / MB,
            goal="< idle + 250 MB",
            met=peak - idle < 250 * MB,
            label="" if count == 200 else "quick: 6 × 2048²",
        ),
        Row(
            NAME,
            f"RSS while {count} runs are held at the host (before results)",
            in_flight / MB,
            "MB",
            idle / MB,
            goal="< idle + 250 MB",
            met=in_flight - idle < 250 * MB,
        ),
    ]
    if downloads is not None:
        downloads.calls = download_calls
    if downloads is not None and downloads.outputs():
        outputs = downloads.outputs()
        most, held = downloads.peak_in_flight()
        returns_bytes = any(kind == "bytes in memory" for *_, kind, _ in outputs)
        details["output_downloads"] = {
            "count": len(outputs),
            "returns": sorted({kind for *_, kind, _ in outputs}),
            "bytes_each_mib": round(max(size for _, _, size, _, _ in outputs) / MB, 2),
            "most_at_once": most,
            "bytes_in_memory_at_once_mb": round(held / MB, 1),
        }
        rows.append(
            Row(
                NAME,
                "output bytes gathered in RAM by downloads at once",
                held / MB,
                "MB",
                goal="streamed to disk, not held",
                met=not returns_bytes,
            )
        )
    report.rows = rows
    report.details = details
    if traced:
        lines = [
            f"at the highest RSS of the traced pass ({traced['rss_at_snapshot_mb']} MB): "
            f"{traced['python_objects_traced_mb']} MB in Python objects, "
            f"{traced['untraced_mb']} MB elsewhere (Pillow's pixel buffers, allocator arenas, libraries)",
            "largest live Python allocations, by the product line that made them:",
        ]
        lines += [
            f"  {site['mb']:8.1f} MB in {site['count']:>5} blocks  via {site['via']}  ({' < '.join(reversed(site['stack']))})"
            for site in traced["largest_allocation_sites"]
        ]
        report.profile = {"note": "a traced pass (tracemalloc), figures not used", "summary": lines, **traced}
    return report
