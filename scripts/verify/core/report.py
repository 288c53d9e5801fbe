"""The summary table: one row per run (or per replica), on the terminal and as Markdown.

With a baseline row, every figure is also shown as a ratio to it, so "jemalloc idles at 0.4x
what a plain service keeps" can be read straight off the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from app.memory.measure import MB
from scripts.verify.core.health import HealthFigures
from scripts.verify.core.run import RunResult
from scripts.verify.core.sampling import exited_during
from scripts.verify.core.verdict import IDLE_TARGET_RATIO


@dataclass(frozen=True)
class Row:
    label: str
    start_mb: float | None
    peak_mb: float | None
    idle_mb: float | None
    returned: float | None
    to_return_s: float | None
    idle_ratio: float | None
    to_target_s: float | None
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    failures: int | None
    status: str  # PASS, FAIL, or NOT MADE
    reasons: tuple[str, ...] = ()
    healthz: HealthFigures | None = None
    # What the setup lost besides requests: processes replaced while it ran, and the share of
    # read-backs of results still inside their TTL that came back 404.
    restarts: int | None = None
    results_lost: float | None = None
    # What the load held memory at (the hold's median, which the returned share is of), and the
    # kernel's peaks: the memory cgroup's and the processes' RSS; None in rows published before.
    load_mb: float | None = None
    cgroup_peak_mb: float | None = None
    rss_peak_mb: float | None = None
    # Where what stayed after the load sits and what would help (stayed.py); None before it.
    stayed: str | None = None

    @classmethod
    def not_made(cls, label: str, why: str) -> Row:
        # Every figure from start_mb to failures is unknown: the setup never ran.
        return cls(
            label, None, None, None, None, None, None, None, None, None, None, None,
            status="NOT MADE", reasons=(why,),
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """The row as the run's summary.json holds it, and the published results file."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Row:
        """A row read back from summary.json; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown row field(s): {', '.join(unknown)}")
        values = dict(data)
        values["reasons"] = tuple(values.get("reasons", ()))
        health = values.get("healthz")
        values["healthz"] = HealthFigures(**health) if health else None
        return cls(**values)


def rows_for(result: RunResult) -> list[Row]:
    """A row per series; the run's label alone when there is one series (the local server)."""
    load = result.load
    rows = []
    for series in result.results:
        figures = series.figures
        label = result.label if len(result.results) == 1 else f"{result.label} {series.series}"
        rows.append(
            Row(
                label=label,
                start_mb=figures.start_bytes / MB if figures else None,
                peak_mb=figures.peak_bytes / MB if figures else None,
                idle_mb=figures.idle_bytes / MB if figures else None,
                returned=figures.returned if figures else None,
                to_return_s=figures.seconds_to_return if figures else None,
                idle_ratio=figures.idle_ratio if figures else None,
                to_target_s=figures.seconds_to_target if figures else None,
                rps=load.requests_per_second if load else None,
                p50_ms=load.p50_ms if load else None,
                p99_ms=load.p99_ms if load else None,
                failures=load.failures if load else None,
                status="PASS" if series.verdict.passed else "FAIL",
                reasons=tuple(series.verdict.reasons),
                healthz=result.healthz,
                restarts=exited_during(result.timeline.of_series(series.series)),
                results_lost=load.lost_share if load else None,
                load_mb=in_mb(figures.load_level_bytes) if figures else None,
                cgroup_peak_mb=in_mb(figures.cgroup_peak_bytes) if figures else None,
                rss_peak_mb=in_mb(figures.rss_peak_bytes) if figures else None,
                stayed=result.timeline.extra.get("stayed"),
            )
        )
    return rows


# name, value, format, and whether the baseline ratio means anything (not for a run's own ratio)
Column = tuple[str, Callable[[Row], float | int | None], str, bool]
COLUMNS: tuple[Column, ...] = (
    ("start MB", lambda r: r.start_mb, "{:.1f}", True),
    ("peak MB", lambda r: r.peak_mb, "{:.1f}", True),
    ("idle MB", lambda r: r.idle_mb, "{:.1f}", True),
    ("idle/start", lambda r: r.idle_ratio, "{:.2f}", False),
    (f"to {IDLE_TARGET_RATIO:g}x s", lambda r: r.to_target_s, "{:.0f}", False),
    ("returned", lambda r: r.returned, "{:.0%}", True),
    ("to return s", lambda r: r.to_return_s, "{:.0f}", False),
    ("req/s", lambda r: r.rps, "{:.1f}", True),
    ("p50 ms", lambda r: r.p50_ms, "{:.0f}", True),
    ("p99 ms", lambda r: r.p99_ms, "{:.0f}", True),
    ("failures", lambda r: r.failures, "{:d}", True),
    ("restarts", lambda r: r.restarts, "{:d}", False),
    ("results lost", lambda r: r.results_lost, "{:.0%}", False),
)
# Shown when a row has them: what the load held memory at, and the kernel's peaks.
LOAD_COLUMN: Column = ("load MB", lambda r: r.load_mb, "{:.1f}", True)
KERNEL_COLUMNS: tuple[Column, ...] = (
    ("cgroup peak MB", lambda r: r.cgroup_peak_mb, "{:.1f}", True),
    ("RSS peak MB", lambda r: r.rss_peak_mb, "{:.1f}", True),
)
# Shown when a row has them: /healthz from due time to answer while the load ran.
HEALTH_COLUMNS: tuple[Column, ...] = (
    ("/healthz p50 ms", lambda r: r.healthz.p50_ms if r.healthz else None, "{:.0f}", True),
    ("/healthz p99 ms", lambda r: r.healthz.p99_ms if r.healthz else None, "{:.0f}", True),
    ("/healthz max ms", lambda r: r.healthz.max_ms if r.healthz else None, "{:.0f}", True),
)


def columns_for(rows: Sequence[Row]) -> tuple[Column, ...]:
    """The columns the rows have figures for: the load level after the start, the kernel's peak
    after the sampled one, /healthz at the end (tables published before them stay as they were)."""
    columns: list[Column] = []
    for column in COLUMNS:
        columns.append(column)
        if column[0] == "start MB" and any(r.load_mb is not None for r in rows):
            columns.append(LOAD_COLUMN)
        if column[0] == "peak MB":
            columns.extend(k for k in KERNEL_COLUMNS if any(k[1](r) is not None for r in rows))
    if any(r.healthz for r in rows):
        columns.extend(HEALTH_COLUMNS)
    return tuple(columns)


def in_mb(value: int | None) -> float | None:
    return value / MB if value is not None else None


def kernel_peak_line(rows: Sequence[Row]) -> str | None:
    """Under a table with the kernel's peaks: what each is, in words."""
    said = []
    if any(r.cgroup_peak_mb is not None for r in rows):
        said.append(
            "cgroup peak MB: the memory cgroup's high-water mark (v1 memory.max_usage_in_bytes, "
            "v2 memory.peak), page cache included as the limit counts it"
        )
    if any(r.rss_peak_mb is not None for r in rows):
        said.append("RSS peak MB: the server's processes' peak resident sets (VmHWM), summed")
    if not said:
        return None
    return "; ".join(said) + "; the kernel's marks over the load and the idle window"


def _cell(value: float | int | None, fmt: str, base: float | int | None) -> str:
    if value is None:
        return "n/a"
    text = fmt.format(value)
    if base is not None:
        text += f" ({value / base:.2f}x)" if base else " (-)"
    return text


def table_cells(
    rows: Sequence[Row], baseline: str | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and cells; with ``baseline`` naming a row, each figure also as a ratio to it."""
    base_row = next((r for r in rows if r.label == baseline), None)
    columns = columns_for(rows)
    header = ["run", *(name for name, _, _, _ in columns), "verdict"]
    cells = []
    for row in rows:
        line = [row.label]
        for _, get, fmt, versus in columns:
            compared = versus and base_row is not None and row is not base_row
            base_value = get(base_row) if compared and base_row is not None else None
            line.append(_cell(get(row), fmt, base_value))
        line.append(row.status)
        cells.append(line)
    return header, cells


def text_lines(header: Sequence[str], cells: Sequence[Sequence[str]]) -> list[str]:
    """A table for the terminal: columns padded, the first to the left, the figures right."""
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *cells]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def markdown_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """The same as Markdown: the first column left-aligned, the figures right."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines.extend("| " + " | ".join(line) + " |" for line in cells)
    return "\n".join(lines)


def render_text(rows: Sequence[Row], baseline: str | None = None) -> str:
    lines = text_lines(*table_cells(rows, baseline))
    if (said := kernel_peak_line(rows)) is not None:
        lines.append(said)
    for row in rows:
        lines.extend(f"{row.label}: {reason}" for reason in row.reasons)
        if row.stayed:
            lines.append(f"{row.label}: {row.stayed}")
    return "\n".join(lines)


def render_markdown(rows: Sequence[Row], baseline: str | None = None) -> str:
    return markdown_table(*table_cells(rows, baseline))


def summary_json(
    title: str, rows: Sequence[Row], context: Sequence[str], baseline: str | None = None
) -> dict[str, Any]:
    """What summary.md shows, as data: the source `python -m scripts.verify publish` reads."""
    return {
        "title": title,
        "context": list(context),
        "baseline": baseline,
        "rows": [row.as_dict() for row in rows],
    }


def rows_of(summary: Mapping[str, Any]) -> list[Row]:
    return [Row.from_dict(row) for row in summary["rows"]]


def summary_markdown(
    title: str, rows: Sequence[Row], context: Sequence[str], baseline: str | None = None
) -> str:
    """The Markdown file written next to the timelines: what was run, the table, the reasons."""
    lines = [
        f"# {title}",
        "",
        *(f"- {item}" for item in context),
        "",
        render_markdown(rows, baseline),
    ]
    if (said := kernel_peak_line(rows)) is not None:
        lines += ["", said]
    reasons = [f"- {row.label}: {reason}" for row in rows for reason in row.reasons]
    reasons += [f"- {row.label}: {row.stayed}" for row in rows if row.stayed]
    if reasons:
        lines += ["", *reasons]
    return "\n".join(lines) + "\n"
