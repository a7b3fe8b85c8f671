"""Fitting a 4096×4096 result under Discord's 10 MiB upload limit (`bot.pictures.images.fit_under`).

The input is a photo-like 4K PNG of about 21 MiB, the size class of a real 4K result. The
baseline, same run, is one Pillow encode of the same decoded image into the format and quality
`fit_under` ended up choosing: the least work any implementation must do to produce that file.
Peak RSS during one call is measured with VmHWM, reset just before the call.

In full mode a heavier-grained image (~41 MiB PNG) is timed too, for information: its first
WebP attempt lands just over the limit, so it shows the cost of the retry path.
"""

from __future__ import annotations

import gc
import io
import statistics
import time
from typing import Any

from PIL import Image

from bench.core import MB, Config, Report, Row, peak_rss, profile_summary, profiling, reset_peak_rss, rss, say
from bench.images import photo_png
from bot.pictures import images

NAME = "fit"
LIMIT = 10 * 1024 * 1024
GOAL_SECONDS = 1.5


def _encode_like(decoded: Image.Image, limit: int) -> tuple[float, int]:
    """One WebP encode at the quality `fit_under` keeps (the first of its ladder that fits)."""
    for quality in (92, 85, 75):
        buffer = io.BytesIO()
        started = time.perf_counter()
        decoded.save(buffer, "WEBP", quality=quality, method=4)
        elapsed = time.perf_counter() - started
        if len(buffer.getvalue()) <= limit or quality == 75:
            return elapsed, quality
    raise AssertionError("unreachable")


def _measure(data: bytes, repeats: int, limit: int) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as opened:
        decoded = opened.convert("RGB")
    fits, encodes, peaks = [], [], []
    fitted = images.fit_under(data, limit)  # warm-up (codec tables, allocator)
    quality = 0
    for _ in range(repeats):
        gc.collect()
        before = rss()
        reset_peak_rss()
        started = time.perf_counter()
        fitted = images.fit_under(data, limit)
        fits.append(time.perf_counter() - started)
        peaks.append(peak_rss() - before)
        encode, quality = _encode_like(decoded, limit)
        encodes.append(encode)
    started = time.perf_counter()
    images.inspect(data)
    decode = time.perf_counter() - started
    return {
        "png_mib": round(len(data) / MB, 2),
        "result": f"{fitted.info.content_type} {fitted.info.width}×{fitted.info.height}, "
        f"{fitted.info.size / MB:.2f} MiB, changed={fitted.changed}",
        "fit_s": [round(v, 3) for v in fits],
        "one_encode_s": [round(v, 3) for v in encodes],
        "baseline_encode": f"WebP quality {quality}, method 4",
        "one_full_decode_s": round(decode, 3),
        "fit_median_s": statistics.median(fits),
        "encode_median_s": statistics.median(encodes),
        "peak_rss_above_start_mb": round(max(peaks) / MB, 1),
    }


async def run(cfg: Config) -> Report:
    repeats = cfg.pick(1, 3)
    side = cfg.pick(2048, 4096)
    limit = cfg.pick(LIMIT // 4, LIMIT)  # quick: a quarter of the pixels under a quarter of the limit
    report = Report(NAME)
    say(f"generating a photo-like {side}×{side} PNG")
    data = photo_png(side, side, 8.0)
    say(f"fit_under × {repeats} (+ one warm-up)")
    main = _measure(data, repeats, limit)
    fit, encode = main["fit_median_s"], main["encode_median_s"]
    report.rows.append(
        Row(
            NAME,
            f"fit {side}² ({main['png_mib']:.0f} MiB PNG) under {limit // MB} MiB",
            fit,
            "s",
            encode,
            goal="≤ 3× baseline, < 1.5 s",
            met=fit <= 3 * encode and fit < GOAL_SECONDS,
            label="" if side == 4096 else "quick: 2048²",
        )
    )
    report.details["photo_grain_8"] = main
    if not cfg.quick:
        say("heavy grain: the retry path")
        heavy = _measure(photo_png(4096, 4096, 30.0), 1, LIMIT)
        report.details["photo_grain_30"] = heavy
        report.rows.append(
            Row(
                NAME,
                f"fit 4096² ({heavy['png_mib']:.0f} MiB PNG, heavy grain) under 10 MiB",
                heavy["fit_median_s"],
                "s",
                heavy["encode_median_s"],
                goal="(informational)",
            )
        )
    if report.missed and cfg.profile:
        with profiling() as profile:
            images.fit_under(data, limit)
        assert profile is not None
        report.profile = {"note": "one profiled fit_under call", **profile_summary(profile)}
    return report
