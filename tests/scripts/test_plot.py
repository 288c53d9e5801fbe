"""The plot explains the verdict: the start, the level the idle must get under, each release."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.memory.measure import MB
from scripts.verify.core import plot
from scripts.verify.core.timeline import read_json

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_lines_are_the_start_and_the_level_that_returns_the_share_asked() -> None:
    timeline = read_json(FIXTURES / "timeline_passes.json")
    figures = timeline.extra["results"][0]["figures"]
    start, peak = figures["start_bytes"] / MB, figures["peak_bytes"] / MB
    (start_label, start_mb), (level_label, level_mb) = plot.verdict_levels(timeline)
    assert start_mb == start and start_label.startswith("start")
    share = timeline.meta["min_returned"]
    assert level_mb == pytest.approx(peak - share * (peak - start))
    assert start < level_mb < peak and "idle must get under" in level_label


def test_a_timeline_without_figures_draws_no_verdict_lines() -> None:
    timeline = read_json(FIXTURES / "timeline_passes.json")
    timeline.extra = {"results": [{"series": "server", "figures": None}]}
    assert plot.verdict_levels(timeline) == []


@pytest.mark.skipif(not plot.plotting_available(), reason="needs matplotlib")
def test_a_plot_with_releases_is_written(tmp_path: Path) -> None:
    timeline = read_json(FIXTURES / "timeline_passes.json")
    timeline.meta["release_seconds"] = [31.0, 36.5]
    path = plot.plot(timeline, tmp_path / "memory.png", "jemalloc: PASS")
    assert path.stat().st_size > 10_000
