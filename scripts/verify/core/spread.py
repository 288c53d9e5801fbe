"""One line per setup over its rounds: the mean of each figure that decides a profile, and its
spread.

A comparison runs every setup several times in turn (A B A B), because one run of each on a shared
machine cannot tell a profile from the noise. The rows table keeps every round; this table says,
per setup, what the rounds agree on: the kernel's peak, the idle over the start, the throughput and
/healthz's p99, each as the mean of the rounds and their spread (the largest less the smallest).
Two setups whose means differ by less than their spreads are not told apart by the run.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scripts.verify.core.report import Row, markdown_table, text_lines

ROUND = re.compile(r"^(?P<setup>.+) #(?P<round>\d+)$")


@dataclass(frozen=True)
class Figure:
    """A figure over a setup's rounds: their mean and their spread (max less min)."""

    mean: float
    spread: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Figure | None:
        if not values:
            return None
        return cls(statistics.mean(values), max(values) - min(values))


@dataclass(frozen=True)
class Setup:
    """A setup's rounds summed up; ``passed`` counts the rounds whose verdict was PASS."""

    label: str
    rounds: int
    passed: int
    peak_kind: str  # "cgroup peak" where every round had one, else "RSS peak", else ""
    peak_mb: Figure | None
    idle_ratio: Figure | None
    rps: Figure | None
    healthz_p99_ms: Figure | None


def setup_of(label: str) -> str | None:
    """The setup a row's label is a round of ("glibc #2" is glibc's), None for a row of one run."""
    found = ROUND.match(label)
    return found["setup"] if found else None


def _values(rows: Sequence[Row], get: Callable[[Row], float | None]) -> list[float]:
    values = [get(row) for row in rows]
    return [v for v in values if v is not None] if all(v is not None for v in values) else []


def _peak(rows: Sequence[Row]) -> tuple[str, Figure | None]:
    """The kernel's peak every round has: the cgroup's (what a limit counts), else the RSS's."""
    for kind, get in (("cgroup peak", _cgroup_peak), ("RSS peak", _rss_peak)):
        if values := _values(rows, get):
            return kind, Figure.of(values)
    return "", None


def _cgroup_peak(row: Row) -> float | None:
    return row.cgroup_peak_mb


def _rss_peak(row: Row) -> float | None:
    return row.rss_peak_mb


def setups(rows: Sequence[Row]) -> list[Setup]:
    """Each setup with at least two rounds among ``rows``, in the order its first round ran; rows
    that were not made count as rounds, with no figures."""
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        if (setup := setup_of(row.label)) is not None:
            grouped.setdefault(setup, []).append(row)
    found = []
    for label, rounds in grouped.items():
        if len(rounds) < 2:
            continue
        made = [row for row in rounds if row.status != "NOT MADE"]
        kind, peak = _peak(made)
        found.append(
            Setup(
                label=label,
                rounds=len(rounds),
                passed=sum(row.status == "PASS" for row in rounds),
                peak_kind=kind,
                peak_mb=peak,
                idle_ratio=Figure.of(_values(made, lambda r: r.idle_ratio)),
                rps=Figure.of(_values(made, lambda r: r.rps)),
                healthz_p99_ms=Figure.of(
                    _values(made, lambda r: r.healthz.p99_ms if r.healthz else None)
                ),
            )
        )
    return found


# header, the figure, its format
SetupColumn = tuple[str, Callable[[Setup], Figure | None], str]
COLUMNS: tuple[SetupColumn, ...] = (
    ("idle/start", lambda s: s.idle_ratio, "{:.2f}"),
    ("req/s", lambda s: s.rps, "{:.1f}"),
    ("/healthz p99 ms", lambda s: s.healthz_p99_ms, "{:.0f}"),
)


def _peak_header(found: Sequence[Setup]) -> str:
    kinds = {s.peak_kind for s in found if s.peak_kind}
    return f"{kinds.pop()} MB" if len(kinds) == 1 else "kernel peak MB"


def table_cells(found: Sequence[Setup]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: each figure's mean, then its spread in a column of its own."""
    header = ["setup", "rounds passed", _peak_header(found), "spread"]
    for name, _, _ in COLUMNS:
        header += [name, "spread"]
    cells = []
    for setup in found:
        line = [setup.label, f"{setup.passed} of {setup.rounds}", *_pair(setup.peak_mb, "{:.1f}")]
        for _, get, fmt in COLUMNS:
            line += _pair(get(setup), fmt)
        cells.append(line)
    return header, cells


def _pair(figure: Figure | None, fmt: str) -> list[str]:
    if figure is None:
        return ["n/a", "n/a"]
    return [fmt.format(figure.mean), fmt.format(figure.spread)]


def render_markdown(found: Sequence[Setup]) -> str:
    return markdown_table(*table_cells(found))


def render_text(found: Sequence[Setup]) -> str:
    return "\n".join(text_lines(*table_cells(found)))


SPREAD_LINE = (
    "each figure is the mean of the setup's rounds, run in turn (A B A B); spread: the largest "
    "less the smallest"
)


def section(rows: Sequence[Row]) -> str | None:
    """The table and what it means, under the rows table of a run with rounds; None without."""
    found = setups(rows)
    if not found:
        return None
    return render_markdown(found) + "\n\n" + SPREAD_LINE
