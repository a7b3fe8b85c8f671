"""What every benchmark shares: the result shape, statistics, RSS, loop lag and profiles.

A benchmark returns a `Report`: one or more table `Row`s (figure, baseline measured in the same
run, ratio, goal, met?) plus free-form `details` and, when a goal is missed, a profile of where
the time went. The runner turns reports into the table and `bench/results.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import math
import os
import pstats
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_DIRS = ("bot", "cogs", "storage")


@dataclass(frozen=True)
class Config:
    """How big a run is; `quick` shrinks every count so the whole suite is a smoke test."""

    quick: bool = False
    profile: bool = True
    workdir: Path = Path("/tmp")

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


@dataclass
class Row:
    """One line of the table.

    `ratio` is always "cost ÷ the baseline's cost", so above 1 means slower (or bigger) than the
    floor: for rates (`higher_is_better`) that is baseline ÷ figure.
    """

    benchmark: str
    metric: str
    figure: float | None
    unit: str
    baseline: float | None = None
    goal: str = ""
    met: bool | None = None
    higher_is_better: bool = False
    label: str = ""

    @property
    def ratio(self) -> float | None:
        if self.figure is None or self.baseline is None or self.figure == 0 or self.baseline == 0:
            return None
        return self.baseline / self.figure if self.higher_is_better else self.figure / self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Report:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def missed(self) -> bool:
        return any(row.met is False for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": [row.to_dict() for row in self.rows],
            "details": self.details,
            "notes": self.notes,
            "profile": self.profile,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        rows = [Row(**{k: v for k, v in row.items() if k != "ratio"}) for row in data.get("rows", [])]
        return cls(
            name=data["name"],
            rows=rows,
            details=data.get("details", {}),
            notes=data.get("notes", []),
            profile=data.get("profile"),
            seconds=data.get("seconds", 0.0),
            error=data.get("error"),
        )


# -------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), the same definition as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> dict[str, float]:
    """n, min, p50, p90, p99, max and mean of `values` times `scale` (e.g. 1000 for ms)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values) * scale, digits),
        "p50": round(percentile(values, 50) * scale, digits),
        "p90": round(percentile(values, 90) * scale, digits),
        "p99": round(percentile(values, 99) * scale, digits),
        "max": round(max(values) * scale, digits),
        "mean": round(statistics.fmean(values) * scale, digits),
    }


# -------------------------------------------------------------------------------- memory


def _status(pid: int | str = "self") -> dict[str, int]:
    found = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:  # noqa: PTH123
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value, _unit = line.split()
                found[key.rstrip(":")] = int(value) * 1024
    return found


def rss(pid: int | str = "self") -> int:
    """Resident set size in bytes (psutil is not a dependency; Linux /proc is enough)."""
    return _status(pid)["VmRSS"]


def peak_rss(pid: int | str = "self") -> int:
    """The high-water mark of RSS since start, or since the last `reset_peak_rss()`."""
    return _status(pid)["VmHWM"]


def reset_peak_rss() -> bool:
    """Make VmHWM start again from the current RSS (Linux ≥ 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:  # noqa: PTH123
            handle.write("5")
    except OSError:
        return False
    return True


MB = 1024 * 1024


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process so far (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:  # noqa: PTH123
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_cpu_seconds() -> float:
    """CPU seconds the machine's cores have been busy so far, with anyone's work (and taken by
    the hypervisor), from /proc/stat: beside a benchmark's own CPU seconds it tells whether the
    cores were free for it or shared."""
    with open("/proc/stat", encoding="ascii") as handle:  # noqa: PTH123
        ticks = [int(value) for value in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_average() -> tuple[float, float, float]:
    """Other work on the machine skews every figure; the results record how busy it was."""
    return os.getloadavg()


# -------------------------------------------------------------------------------- event loop lag


class LoopLag:
    """How late a 5 ms ticker wakes up: the event loop's responsiveness while work is under way.

    A CPU-bound call made on the loop (rather than in a thread) shows up as a long lateness, so
    this tells "the loop was blocked" apart from "the loop was waiting on the database".
    """

    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self.lateness: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            self.lateness.append(max(0.0, loop.time() - expected))

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> dict[str, float]:
        return summary(self.lateness, scale=1000)


# -------------------------------------------------------------------------------- profiles


def _where(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    path = Path(filename)
    with contextlib.suppress(ValueError):
        return f"{path.relative_to(ROOT)}:{line}({name})"
    if "site-packages" in path.parts:
        index = path.parts.index("site-packages")
        return f"{'/'.join(path.parts[index + 1 :])}:{line}({name})"
    if filename == "~":
        return name
    return f"{path.name}:{line}({name})"


def _is_product(key: tuple[str, int, str]) -> bool:
    with contextlib.suppress(ValueError):
        return Path(key[0]).relative_to(ROOT).parts[0] in PRODUCT_DIRS
    return False


# Where a thread sleeps rather than works; cProfile counts their wall time as "own time".
IDLE = frozenset(
    {
        "<method 'poll' of 'select.epoll' objects>",
        "<method 'get' of '_queue.SimpleQueue' objects>",
        "<method 'acquire' of '_thread.lock' objects>",
        "<built-in method time.sleep>",
    }
)


def _entries(stats: pstats.Stats, limit: int) -> dict[str, Any]:
    everything: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    idle = sum(v[2] for k, v in everything.items() if k[2] in IDLE)
    raw = {k: v for k, v in everything.items() if k[2] not in IDLE}

    def entry(key: tuple[str, int, str], value: tuple[int, int, float, float, Any]) -> dict[str, Any]:
        _cc, calls, own, cumulative, _callers = value
        return {
            "function": _where(key),
            "calls": calls,
            "own_s": round(own, 4),
            "cumulative_s": round(cumulative, 4),
        }

    product = sorted(((k, v) for k, v in raw.items() if _is_product(k)), key=lambda kv: -kv[1][3])
    anywhere = sorted(raw.items(), key=lambda kv: -kv[1][2])
    return {
        "busy_s": round(sum(v[2] for v in raw.values()), 3),
        "idle_s": round(idle, 3),
        "product_by_cumulative": [entry(k, v) for k, v in product[:limit]],
        "all_by_own_time": [entry(k, v) for k, v in anywhere[:limit]],
    }


def profile_summary(
    profile: cProfile.Profile, workers: Sequence[cProfile.Profile] = (), *, limit: int = 12
) -> dict[str, Any]:
    """The product functions with the most cumulative time, and any functions with the most own time.

    `profile` is the event loop's thread; `workers` are the default executor's threads
    (`asyncio.to_thread`: Pillow, file writes), whose time the loop's profile only sees as a wait.
    aiosqlite's own thread is not profiled: its queries show as awaits in the loop's profile.
    Profiles are timed with each thread's CPU clock, so waiting (for I/O, a lock or the GIL)
    costs nothing and the figures are CPU seconds.
    """
    summary_ = {"event_loop_thread": _entries(pstats.Stats(profile), limit)}
    if workers:
        merged = pstats.Stats(workers[0])
        for extra in workers[1:]:
            merged.add(extra)
        summary_["worker_threads"] = _entries(merged, limit)
    return summary_


class Profiler:
    """cProfile of the event loop thread and, while active, of `asyncio.to_thread` work too.

    Worker threads are covered by swapping in a fresh default executor whose threads each start a
    profiler of their own; on exit that executor is shut down (so its profiles are complete) and
    a plain one takes its place.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.main = cProfile.Profile(time.thread_time)
        self.workers: list[cProfile.Profile] = []
        self._executor: ThreadPoolExecutor | None = None

    def _start_worker(self) -> None:
        profile = cProfile.Profile(time.thread_time)
        self.workers.append(profile)
        profile.enable()

    async def __aenter__(self) -> Profiler:
        if self.enabled:
            self._executor = ThreadPoolExecutor(thread_name_prefix="profiled", initializer=self._start_worker)
            asyncio.get_running_loop().set_default_executor(self._executor)
            self.main.enable()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self.main.disable()
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor())
        if self._executor is not None:
            await loop.run_in_executor(None, self._executor.shutdown, True)

    def summary(self) -> dict[str, Any] | None:
        return profile_summary(self.main, self.workers) if self.enabled else None


@contextlib.contextmanager
def profiling(enabled: bool = True) -> Iterator[cProfile.Profile | None]:
    """cProfile of the calling thread only (for synchronous code)."""
    if not enabled:
        yield None
        return
    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    try:
        yield profile
    finally:
        profile.disable()


class LogTally(logging.Handler):
    """Counts warnings and errors by logger and message; prints each distinct one once.

    A benchmark that overloads the bot makes it log the same failure hundreds of times (with
    tracebacks); the count belongs in the results, the repetition does not belong on screen.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().splitlines()[0][:160]
        if record.exc_info and record.exc_info[1] is not None:
            message += f" [{type(record.exc_info[1]).__name__}: {str(record.exc_info[1])[:120]}]"
        key = f"{record.levelname} {record.name}: {message}"
        key = re.sub(r"\b\d{3,}\b", "N", key)  # ids and job numbers: one line per kind
        if key not in self.counts:
            print(f"    {key}", file=sys.stderr, flush=True)
        self.counts[key] += 1

    def summary(self) -> dict[str, int]:
        return dict(self.counts.most_common(20))


class Stopwatch:
    """`with Stopwatch() as watch: ...; watch.seconds` — wall time with perf_counter."""

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def say(message: str) -> None:
    """Progress for the person watching a long run (stderr keeps stdout for the table)."""
    print(f"  · {message}", file=sys.stderr, flush=True)
