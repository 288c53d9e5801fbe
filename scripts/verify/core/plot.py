"""Memory over time as a PNG: each series, the load phases shaded, the limit drawn, and what
the verdict compares: the start, the level the idle must get under, and each release that ran.

matplotlib is imported here only, and only when a plot is asked for: the verdict never needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.memory.measure import MB
from scripts.verify.core import phases as ph
from scripts.verify.core.kernel_peak import recorded_peak
from scripts.verify.core.timeline import Timeline

PHASE_COLOURS = {
    ph.WARMUP: "#e3f2fd",
    ph.BASELINE: "#e8e8e8",
    ph.RAMP: "#ffe0b2",
    ph.HOLD: "#ffcc80",
    ph.IDLE: "#c8e6c9",
}


def in_mb(value: float | None) -> float:
    """A sample in MB for a plotted line; NaN where nothing was read, which matplotlib leaves
    as a gap."""
    return value / MB if value is not None else math.nan


def verdict_levels(timeline: Timeline) -> list[tuple[str, float]]:
    """(label, MB) of the lines the verdict judges against, from the first judged series: its
    start, and the level that gives back --min-returned of what the load raised memory by (idle
    must get under it)."""
    results = (timeline.extra or {}).get("results") or []
    figures: dict[str, Any] = next(
        (r["figures"] for r in results if isinstance(r, dict) and r.get("figures")), {}
    )
    if "start_bytes" not in figures or "peak_bytes" not in figures:
        return []
    start = figures["start_bytes"] / MB
    # The return is of the load level; a figure recorded before it was measured, of the peak.
    held = (figures.get("load_level_bytes") or figures["peak_bytes"]) / MB
    share = float(timeline.meta.get("min_returned", 0.5))
    level = held - share * (held - start)
    return [(f"start {start:.0f} MB", start), (f"idle must get under {level:.0f} MB", level)]


def kernel_levels(timeline: Timeline) -> list[tuple[str, float]]:
    """(label, MB) of the kernel's peaks over the load and the idle window, where recorded: the
    highs between samples that the curves cannot show."""
    peak = recorded_peak(timeline.extra or {})
    if peak is None:
        return []
    found = [("kernel: cgroup peak", peak.cgroup_bytes), ("kernel: RSS peak", peak.rss_bytes)]
    return [(f"{what} {value / MB:.0f} MB", value / MB) for what, value in found if value]


def mark_releases(axes: Any, seconds: list[float]) -> None:
    """A thin line at each release the service's status route listed, named once."""
    for n, t in enumerate(seconds):
        axes.axvline(t, color="#6a1b9a", lw=0.8, alpha=0.7, label="release" if n == 0 else None)


def plotting_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(
    timeline: Timeline,
    path: Path,
    title: str,
    annotate: Callable[[Any], None] | None = None,
) -> Path:
    """Write the PNG; the verdict's metric solid, RSS dashed, the cgroup's working set dotted, and
    the kernel's peaks as fine dotted levels.

    Phases that repeat (a soak's cycles) are each shaded, named once in the legend;
    ``annotate`` is called with the axes before the legend is drawn, to add marks of its own."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metric = str(timeline.meta.get("metric", "rss"))
    limit_mb = timeline.meta.get("limit_mb")
    figure, axes = plt.subplots(figsize=(10, 5), dpi=110)
    try:
        named: set[str] = set()
        for phase in timeline.phases:
            if phase.seconds > 0:
                axes.axvspan(
                    phase.start,
                    phase.end,
                    color=PHASE_COLOURS.get(phase.name, "#eeeeee"),
                    alpha=0.6,
                    lw=0,
                    label=None if phase.name in named else phase.name,
                )
                named.add(phase.name)
        for series in timeline.series():
            samples = timeline.of_series(series)
            times = [s.t for s in samples]
            name = "" if series == "server" else f"{series} "
            values = [s.value(metric) for s in samples]
            axes.plot(
                times,
                [in_mb(v) for v in values],
                lw=1.8,
                label=f"{name}{metric}",
            )
            if metric != "rss":
                axes.plot(
                    times,
                    [in_mb(s.rss_bytes or None) for s in samples],
                    lw=1,
                    ls="--",
                    label=f"{name}rss",
                )
            if metric != "cgroup" and any(s.cgroup_working_set_bytes for s in samples):
                axes.plot(
                    times,
                    [in_mb(s.value("cgroup") or None) for s in samples],
                    lw=1,
                    ls=":",
                    label=f"{name}cgroup working set",
                )
        if isinstance(limit_mb, int | float):
            axes.axhline(limit_mb, color="#c62828", lw=1.2, ls="-.", label=f"limit {limit_mb:g} MB")
        levels = verdict_levels(timeline)
        for (label, mb), colour in zip(levels, ("#546e7a", "#2e7d32"), strict=False):
            axes.axhline(mb, color=colour, lw=1, ls=(0, (4, 2)), label=label)
        kernel = kernel_levels(timeline)
        for (label, mb), colour in zip(kernel, ("#6a1b9a", "#ef6c00"), strict=False):
            axes.axhline(mb, color=colour, lw=1, ls=(0, (1, 2)), label=label)
        mark_releases(axes, list(timeline.meta.get("release_seconds") or []))
        if annotate is not None:
            annotate(axes)
        axes.set_xlabel("seconds")
        axes.set_ylabel("MB")
        axes.set_ylim(bottom=0)
        axes.set_title(title)
        axes.legend(loc="upper right", fontsize=8, ncol=2)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
