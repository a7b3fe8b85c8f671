"""The printed table, and a short profile digest under it for every missed goal."""

from __future__ import annotations

from collections.abc import Sequence

from bench.core import Report, Row

HEADERS = ("benchmark", "figure", "baseline", "ratio", "goal", "met?")


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit.startswith("of "):
        return f"{value:.0f} {unit}"
    if unit in ("ms", "MB"):
        text = f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    elif unit == "s":
        text = f"{value:.2f}" if value < 10 else f"{value:.1f}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{text} {unit}".strip()


def _met(row: Row) -> str:
    if row.met is None:
        return "—"
    return "yes" if row.met else "NO"


def _cells(row: Row) -> tuple[str, ...]:
    name = row.metric + (f" [{row.label}]" if row.label else "")
    ratio = "—" if row.ratio is None else f"{row.ratio:.2f}×"
    return (name, fmt(row.figure, row.unit), fmt(row.baseline, row.unit), ratio, row.goal, _met(row))


def render_table(reports: Sequence[Report]) -> str:
    lines: list[tuple[str, ...]] = [HEADERS]
    for report in reports:
        if report.error:
            lines.append((f"{report.name}: ERROR (see above)", "", "", "", "", ""))
        lines += [_cells(row) for row in report.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    out = []
    for n, line in enumerate(lines):
        out.append(" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("-+-".join("-" * w for w in widths))
    notes = [f"  * {note}" for report in reports for note in report.notes]
    legend = "ratio = cost ÷ baseline cost (for rates: baseline rate ÷ figure); >1 is worse than the floor."
    return "\n".join(["", *out, "", legend, *notes])


def render_profiles(reports: Sequence[Report], limit: int = 8) -> str:
    out = []
    for report in reports:
        if not report.missed or not report.profile:
            continue
        profile = report.profile
        out.append(f"\nprofile of {report.name} (missed): {profile.get('note', '')}".rstrip())
        for line in profile.get("summary", []):
            out.append(f"  {line}")
        for thread in ("event_loop_thread", "worker_threads"):
            section = profile.get(thread)
            if not section:
                continue
            out.append(f"  {thread.replace('_', ' ')} ({section['busy_s']:.2f} s CPU in profiled calls):")
            for title, key in (
                ("product code, cumulative", "product_by_cumulative"),
                ("own time", "all_by_own_time"),
            ):
                out.append(f"    {title}:")
                for entry in section.get(key, [])[:limit]:
                    out.append(
                        f"      {entry['cumulative_s']:8.3f}s cum {entry['own_s']:8.3f}s own "
                        f"{entry['calls']:>7} calls  {entry['function']}"
                    )
    return "\n".join(out)
