"""The soak's report: one row per cycle, the drift and the verdict, on the terminal, as Markdown
and as CSV, and the verifier's memory plot with each cycle named and its idle figure marked.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.memory.measure import MB
from scripts.verify.core import plot
from scripts.verify.core.timeline import Timeline
from scripts.verify.soak.cycles import Cycle
from scripts.verify.soak.verdict import SoakOutcome


def _mb(value: int | None) -> float | None:
    return None if value is None else value / MB


Column = tuple[str, Callable[[Cycle], float | int | None], str]
COLUMNS: tuple[Column, ...] = (
    ("start MB", lambda c: _mb(c.figures.start_bytes) if c.figures else None, "{:.1f}"),
    ("peak MB", lambda c: _mb(c.figures.peak_bytes) if c.figures else None, "{:.1f}"),
    ("idle MB", lambda c: _mb(c.figures.idle_bytes) if c.figures else None, "{:.1f}"),
    ("returned", lambda c: c.figures.returned if c.figures else None, "{:.0%}"),
    ("PSS peak MB", lambda c: _mb(c.pss.peak_bytes) if c.pss else None, "{:.1f}"),
    ("PSS idle MB", lambda c: _mb(c.pss.idle_bytes) if c.pss else None, "{:.1f}"),
    ("requests", lambda c: c.load.requests if c.load else None, "{:d}"),
    ("failures", lambda c: c.load.failures if c.load else None, "{:d}"),
    ("p99 ms", lambda c: c.load.p99_ms if c.load else None, "{:.0f}"),
)
CSV_COLUMNS = (
    "cycle",
    "start_s",
    "end_s",
    "metric",
    "start_mb",
    "peak_mb",
    "idle_mb",
    "returned",
    "pss_peak_mb",
    "pss_idle_mb",
    "requests",
    "failures",
    "requests_per_second",
    "p50_ms",
    "p99_ms",
)


def cells(cycles: Sequence[Cycle]) -> tuple[list[str], list[list[str]]]:
    header = ["cycle", *(name for name, _, _ in COLUMNS)]
    rows = []
    for cycle in cycles:
        row = [str(cycle.index)]
        for _, get, fmt in COLUMNS:
            value = get(cycle)
            row.append("n/a" if value is None else fmt.format(value))
        rows.append(row)
    return header, rows


def _lines(outcome: SoakOutcome) -> list[str]:
    lines = []
    if outcome.drift is not None:
        lines.append(f"drift: {outcome.drift.describe()}")
    if outcome.stayed is not None:
        lines.append(f"stayed: {outcome.stayed}")
    lines.append(f"end: {outcome.end.describe()}")
    status = "PASS" if outcome.verdict.passed else "FAIL"
    lines.append(f"verdict: {status}")
    lines += [f"  {reason}" for reason in outcome.verdict.reasons]
    lines += [f"  note: {note}" for note in outcome.verdict.notes]
    return lines


def render_text(outcome: SoakOutcome) -> str:
    header, rows = cells(outcome.cycles)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    table = [
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *rows]
    ]
    table.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([f"{outcome.label} ({outcome.metric})", *table, *_lines(outcome)])


def as_json(outcome: SoakOutcome, context: Sequence[str]) -> dict[str, Any]:
    """soak.json: the table as printed, with its context and verdict: what `publish --as soak`
    keeps."""
    header, rows = cells(outcome.cycles)
    return {
        "label": outcome.label,
        "context": list(context),
        "header": header,
        "rows": rows,
        "lines": [line.strip() for line in _lines(outcome)],
    }


def render_cells(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def render_markdown(outcome: SoakOutcome, context: Sequence[str]) -> str:
    header, rows = cells(outcome.cycles)
    lines = [
        f"# Soak: {outcome.label}",
        "",
        *(f"- {item}" for item in context),
        "",
        render_cells(header, rows),
        "",
        *(f"- {line.strip()}" for line in _lines(outcome)),
    ]
    return "\n".join(lines) + "\n"


def _csv_mb(value: int | None) -> float | str:
    return "" if value is None else round(value / MB, 1)


def csv_row(cycle: Cycle) -> dict[str, object]:
    """One cycle in MB and seconds; an empty cell where there is no figure."""
    f, p, load = cycle.figures, cycle.pss, cycle.load
    row: dict[str, object] = {
        "cycle": cycle.index,
        "start_s": cycle.start,
        "end_s": cycle.end,
        "metric": f.metric if f else "",
        "start_mb": _csv_mb(f.start_bytes if f else None),
        "peak_mb": _csv_mb(f.peak_bytes if f else None),
        "idle_mb": _csv_mb(f.idle_bytes if f else None),
        "returned": "" if f is None or f.returned is None else round(f.returned, 3),
        "pss_peak_mb": _csv_mb(p.peak_bytes if p else None),
        "pss_idle_mb": _csv_mb(p.idle_bytes if p else None),
    }
    if load is not None:
        row.update(
            requests=load.requests,
            failures=load.failures,
            requests_per_second=round(load.requests_per_second, 2),
            p50_ms="" if load.p50_ms is None else load.p50_ms,
            p99_ms="" if load.p99_ms is None else load.p99_ms,
        )
    return row


def write_csv(path: Path, cycles: Sequence[Cycle]) -> Path:
    """cycles.csv: one row per cycle, for a spreadsheet."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(csv_row(c) for c in cycles)
    return path


def annotator(outcome: SoakOutcome, timeline: Timeline) -> Callable[[Any], None]:
    """Marks for the verifier's plot: each cycle's number, its idle figure as a short bar over
    the end of its idle window, PSS beside the judged metric, and the drift allowed."""

    def annotate(axes: Any) -> None:
        if outcome.metric != "pss":
            samples = [s for s in timeline.samples if s.pss_bytes]
            axes.plot(
                [s.t for s in samples],
                [(s.pss_bytes or 0) / MB for s in samples],
                lw=1,
                color="#6a1b9a",
                alpha=0.7,
                label="pss (summed)",
            )
        tail = float(timeline.meta.get("idle_tail_seconds", 5))
        for cycle in outcome.cycles:
            axes.axvline(cycle.start, color="#616161", lw=0.8)
            axes.text(cycle.start + 1, 5, f"cycle {cycle.index}", va="bottom", fontsize=8)
            if cycle.figures is not None:
                idle = cycle.figures.idle_bytes / MB
                axes.hlines(idle, cycle.end - tail, cycle.end, color="#1b5e20", lw=3)
                axes.text(cycle.end, idle, f" {idle:.0f}", va="bottom", fontsize=7)
        if outcome.drift is not None:
            ceiling = (outcome.drift.first_idle_bytes + outcome.drift.allowed_bytes) / MB
            axes.axhline(
                ceiling,
                color="#1b5e20",
                lw=1,
                ls=":",
                label=f"idle ceiling (drift) {ceiling:.0f} MB",
            )

    return annotate


def write_plot(outcome: SoakOutcome, timeline: Timeline, path: Path) -> Path:
    status = "PASS" if outcome.verdict.passed else "FAIL"
    title = f"soak {outcome.label}: {len(outcome.cycles)} cycles, {status}"
    return plot.plot(timeline, path, title, annotate=annotator(outcome, timeline))
