"""`python -m bench`: run the benchmarks, print one table, write bench/results.json.

Each benchmark runs in a fresh interpreter (`--child`), so one benchmark's leftovers (memory,
discord.py's process-wide routes, warm caches) never flavour the next one's figures, and the
memory benchmark's idle RSS is a real idle bot's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.core import ROOT, Config, LogTally, Report, load_average
from bench.table import render_profiles, render_table
from bot.runtime.loops import use_fastest

BENCHMARKS = {
    "ack": "bench.ack",
    "overhead": "bench.overhead",
    "throughput": "bench.throughput",
    "fit": "bench.fit",
    "memory": "bench.memory",
    "ledger": "bench.ledger",
    "journal": "bench.journal",
    "polling": "bench.polling",
    "startup": "bench.startup",
    "scaling": "bench.scaling",
    "takeover": "bench.takeover",
}
RESULTS = ROOT / "bench" / "results.json"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run in under a minute")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME", help="run one (repeatable)"
    )
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the extra profiled passes (default: on in full mode, off with --quick)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--loop",
        choices=("fastest", "asyncio"),
        default="fastest",
        help="the bot's event loop: the launcher's choice (uvloop where installed), or asyncio's own",
    )
    parser.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def _run_one(name: str, cfg: Config) -> Report:
    module = importlib.import_module(BENCHMARKS[name])
    started = time.perf_counter()
    try:
        report: Report = await module.run(cfg)
    except Exception:
        report = Report(name, error=traceback.format_exc())
    report.seconds = time.perf_counter() - started
    return report


def _child(args: argparse.Namespace) -> int:
    """One benchmark in this interpreter; the report goes to --result as JSON."""
    tally = LogTally()
    logging.basicConfig(level=logging.WARNING, handlers=[tally])
    # discord.py warns once per client about a missing message content intent; not ours to fix.
    logging.getLogger("discord.ext.commands.bot").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="retouch-bench-") as workdir:
        profile = (not args.quick) if args.profile is None else args.profile
        cfg = Config(quick=args.quick, profile=profile, workdir=Path(workdir))
        load_before = load_average()
        loop = use_fastest() if args.loop == "fastest" else "asyncio"
        report = asyncio.run(_run_one(args.child, cfg))
        report.details["event_loop"] = loop
    report.details["machine_load_average"] = {"before": load_before, "after": load_average()}
    if tally.counts:
        report.details["warnings_and_errors_logged"] = tally.summary()
    args.result.write_text(json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8")
    # A bot that failed half-way may leave a non-daemon thread (aiosqlite's) behind; the report
    # is written, so leave without waiting for it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn(name: str, args: argparse.Namespace, timeout: float) -> Report:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result = Path(handle.name)
    command = [sys.executable, "-m", "bench", "--child", name, "--result", str(result)]
    command += ["--quick"] if args.quick else []
    command += ["--loop", args.loop]
    if args.profile is not None:
        command += ["--profile" if args.profile else "--no-profile"]
    try:
        completed = subprocess.run(command, cwd=ROOT, timeout=timeout, check=False)
        text = result.read_text(encoding="utf-8") if result.exists() else ""
        if completed.returncode != 0 or not text:
            return Report(name, error=f"the benchmark process exited with {completed.returncode}")
        return Report.from_dict(json.loads(text))
    except subprocess.TimeoutExpired:
        return Report(name, error=f"timed out after {timeout:.0f} s")
    finally:
        result.unlink(missing_ok=True)


def _product_version() -> dict[str, object]:
    """The commit measured, and whether product files had uncommitted changes at the time."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "bot", "cogs", "storage")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_product_changes": changed.splitlines(),
    }


def main(argv: list[str]) -> int:
    args = _parse(argv)
    if args.list:
        for name, module in BENCHMARKS.items():
            doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
            print(f"{name:12} {doc}")
        return 0
    if args.child:
        return _child(args)
    names = args.only or list(BENCHMARKS)
    mode = "quick" if args.quick else "full"
    print(f"Retouch benchmarks ({mode}): {', '.join(names)}", file=sys.stderr)
    started = time.perf_counter()
    reports = []
    for name in names:
        print(f"[{name}]", file=sys.stderr, flush=True)
        product = _product_version()  # the tree can change between benchmarks; record it for each
        report = _spawn(name, args, timeout=300 if args.quick else 1800)
        report.details["product_at_start"] = product
        if report.error:
            print(f"  ! {name} failed:\n{report.error}", file=sys.stderr)
        print(f"  done in {report.seconds:.1f} s", file=sys.stderr, flush=True)
        reports.append(report)
    elapsed = time.perf_counter() - started
    print(render_table(reports))
    profiles = render_profiles(reports)
    if profiles:
        print(profiles)
    out = {
        "mode": mode,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(elapsed, 1),
        "product_at_end": _product_version(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "load_average_at_end": load_average(),
        },
        "rows": [row.to_dict() for report in reports for row in report.rows],
        "benchmarks": {report.name: report.to_dict() for report in reports},
    }
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out} ({elapsed:.0f} s)")
    return 1 if any(report.error for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
