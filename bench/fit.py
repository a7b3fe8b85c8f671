"""Fitting a 4096×4096 result under Discord's 10 MiB upload limit (`bot.pictures.images.fit_under`).

The input is a photo-like 4K PNG of about 21 MiB, the size class of a real 4K result. The
baseline, same run, is the least work any implementation must do to produce the file
`fit_under` chose: one decode of the PNG and one Pillow encode of the decoded picture in that
codec at that quality. Peak RSS during one call is measured with VmHWM, reset just before it.

Quality is measured beside the time: the PSNR of the fitted file against the source (shrunk
files are scaled back up to be compared), next to that of WebP at quality 92 of the same
pixels, which is how results of up to 8.3 MP were fitted before JPEG; the details also give
what that fitting made of this picture (shrunk to 8.3 MP first).

In full mode a heavier-grained image (~39 MiB PNG) is timed too, for information: JPEG at
quality 96 is over the limit there, so it shows the cost of going down the quality ladder.
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
from bot.pictures import encoders, images
from bot.pictures.sizes import MAX_PIXELS as LARGEST_RESULT
from tests.images import psnr

NAME = "fit"
LIMIT = 10 * 1024 * 1024
GOAL_SECONDS = 1.0


def _encode_like(decoded: Image.Image, fitted: images.Fitted) -> tuple[float, str]:
    """One encode of the picture at the codec and quality `fit_under` chose.

    The quality is found by encoding the ladder until the file's size matches (encodings are
    deterministic); a shrunk file is matched at its size and the codec's shrinking quality.
    """
    codec = encoders.JPEG if fitted.info.content_type == "image/jpeg" else encoders.WEBP
    size = (fitted.info.width, fitted.info.height)
    picture = decoded if decoded.size == size else decoded.resize(size, Image.Resampling.LANCZOS)
    qualities = codec.qualities if picture is decoded else (codec.shrink_quality,)
    elapsed = 0.0
    for quality in qualities:
        started = time.perf_counter()
        encoded = codec.encode(picture, quality, None, None)
        elapsed = time.perf_counter() - started
        if encoded is not None and len(encoded) == fitted.info.size:
            break
    return elapsed, f"{codec.content_type} quality {quality}"


def _psnr(data: bytes, source: Image.Image) -> float:
    """The file's PSNR against the source, scaled back up to it when it was shrunk."""
    with Image.open(io.BytesIO(data)) as opened:
        result = opened.convert("RGB")
    if result.size != source.size:
        result = result.resize(source.size, Image.Resampling.LANCZOS)
    return psnr(result, source)


def _webp(picture: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "WEBP", quality=quality, method=4)
    return buffer.getvalue()


def _previous_fit(source: Image.Image, limit: int) -> bytes:
    """What fitting made before JPEG: at most 8.3 MP, in WebP at the first of 92, 85, 75 that fits."""
    scale = min(1.0, (LARGEST_RESULT / (source.width * source.height)) ** 0.5)
    size = (int(source.width * scale), int(source.height * scale))
    picture = source if scale == 1 else source.resize(size, Image.Resampling.LANCZOS)
    for quality in (92, 85, 75):
        encoded = _webp(picture, quality)
        if len(encoded) <= limit:
            break
    return encoded


def _measure(data: bytes, repeats: int, limit: int) -> dict[str, Any]:
    fitted = images.fit_under(data, limit)  # warm-up (codec tables, allocator)
    fits, baselines, peaks = [], [], []
    for _ in range(repeats):
        gc.collect()
        before = rss()
        reset_peak_rss()
        started = time.perf_counter()
        fitted = images.fit_under(data, limit)
        fits.append(time.perf_counter() - started)
        peaks.append(peak_rss() - before)
        started = time.perf_counter()
        with Image.open(io.BytesIO(data)) as opened:
            decoded = opened.convert("RGB")
        decode = time.perf_counter() - started
        encode, encoding = _encode_like(decoded, fitted)
        baselines.append(decode + encode)
    previous = _previous_fit(decoded, limit)
    return {
        "png_mib": round(len(data) / MB, 2),
        "result": f"{fitted.info.content_type} {fitted.info.width}×{fitted.info.height}, "
        f"{fitted.info.size / MB:.2f} MiB, changed={fitted.changed}",
        "fit_s": [round(v, 3) for v in fits],
        "decode_and_encode_s": [round(v, 3) for v in baselines],
        "baseline_encode": encoding,
        "fit_median_s": statistics.median(fits),
        "baseline_median_s": statistics.median(baselines),
        "peak_rss_above_start_mb": round(max(peaks) / MB, 1),
        "psnr_db": round(_psnr(fitted.data, decoded), 2),
        "webp_q92_psnr_db": round(_psnr(_webp(decoded, 92), decoded), 2),
        "previous_fit": f"WebP {len(previous) / MB:.2f} MiB, {_psnr(previous, decoded):.2f} dB",
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
    fit = main["fit_median_s"]
    label = "" if side == 4096 else f"quick: {side}²"
    report.rows.append(
        Row(
            NAME,
            f"fit {side}² ({main['png_mib']:.0f} MiB PNG) under {limit // MB} MiB",
            fit,
            "s",
            main["baseline_median_s"],
            goal="< 1.0 s",
            met=fit < GOAL_SECONDS,
            label=label,
        )
    )
    report.rows.append(
        Row(
            NAME,
            "fitted file's PSNR against the source",
            main["psnr_db"],
            "dB",
            main["webp_q92_psnr_db"],
            goal="≥ WebP q92 of the same pixels",
            met=main["psnr_db"] >= main["webp_q92_psnr_db"],
            higher_is_better=True,
            label=label,
        )
    )
    report.details["photo_grain_8"] = main
    if not cfg.quick:
        say("heavy grain: down the quality ladder")
        heavy = _measure(photo_png(4096, 4096, 30.0), 1, LIMIT)
        report.details["photo_grain_30"] = heavy
        report.rows.append(
            Row(
                NAME,
                f"fit 4096² ({heavy['png_mib']:.0f} MiB PNG, heavy grain) under 10 MiB",
                heavy["fit_median_s"],
                "s",
                heavy["baseline_median_s"],
                goal="(informational)",
            )
        )
    if report.missed and cfg.profile:
        with profiling() as profile:
            images.fit_under(data, limit)
        assert profile is not None
        report.profile = {"note": "one profiled fit_under call", **profile_summary(profile)}
    return report
