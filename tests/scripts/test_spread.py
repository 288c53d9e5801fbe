"""Each setup over its rounds: the mean and the spread of what decides a profile."""

from __future__ import annotations

import dataclasses

import pytest

from scripts.verify.core import spread
from scripts.verify.core.health import HealthFigures
from scripts.verify.core.report import Row


def row(label: str, cgroup: float | None, idle_ratio: float, rps: float, p99: float) -> Row:
    return Row(
        label=label, start_mb=50.0, peak_mb=200.0, idle_mb=50.0 * idle_ratio, returned=0.9,
        to_return_s=3.0, idle_ratio=idle_ratio, to_target_s=1.0, rps=rps, p50_ms=80.0,
        p99_ms=900.0, failures=0, status="PASS", healthz=HealthFigures(100, 5.0, p99, 90.0),
        cgroup_peak_mb=cgroup, rss_peak_mb=250.0,
    )  # fmt: skip


def test_a_setup_is_the_mean_of_its_rounds_and_their_spread() -> None:
    rows = [
        row("glibc #1", 300.0, 1.6, 20.0, 40.0),
        row("jemalloc #1", 250.0, 1.1, 21.0, 30.0),
        row("glibc #2", 280.0, 1.8, 18.0, 60.0),
        row("jemalloc #2", 262.0, 1.2, 19.0, 34.0),
    ]
    glibc, jemalloc = spread.setups(rows)
    assert (glibc.label, glibc.rounds, glibc.passed) == ("glibc", 2, 2)
    assert glibc.peak_kind == "cgroup peak"
    assert glibc.peak_mb == spread.Figure(290.0, 20.0)
    assert glibc.idle_ratio is not None
    assert (glibc.idle_ratio.mean, glibc.idle_ratio.spread) == pytest.approx((1.7, 0.2))
    assert glibc.rps == spread.Figure(19.0, 2.0)
    assert glibc.healthz_p99_ms == spread.Figure(50.0, 20.0)
    assert jemalloc.peak_mb == spread.Figure(256.0, 12.0)


def test_the_peak_is_the_rss_where_a_round_had_no_cgroup() -> None:
    rows = [row("glibc #1", 300.0, 1.6, 20.0, 40.0), row("glibc #2", None, 1.8, 18.0, 60.0)]
    (glibc,) = spread.setups(rows)
    assert glibc.peak_kind == "RSS peak" and glibc.peak_mb == spread.Figure(250.0, 0.0)
    assert "RSS peak MB" in spread.render_markdown([glibc])


def test_failed_and_not_made_rounds_are_counted_but_add_no_figures() -> None:
    failed = dataclasses.replace(row("glibc #2", 320.0, 3.0, 18.0, 60.0), status="FAIL")
    rows = [row("glibc #1", 300.0, 1.6, 20.0, 40.0), failed, Row.not_made("glibc #3", "no lib")]
    (glibc,) = spread.setups(rows)
    assert (glibc.rounds, glibc.passed) == (3, 1)
    assert glibc.peak_mb == spread.Figure(310.0, 20.0)


def test_rows_of_one_run_each_make_no_table() -> None:
    rows = [row("glibc", 300.0, 1.6, 20.0, 40.0), row("jemalloc #1", 250.0, 1.1, 21.0, 30.0)]
    assert spread.setups(rows) == []
    assert spread.section(rows) is None


def test_the_markdown_puts_each_spread_beside_its_mean() -> None:
    rows = [row("glibc #1", 300.0, 1.6, 20.0, 40.0), row("glibc #2", 280.0, 1.8, 18.0, 60.0)]
    section = spread.section(rows)
    assert section is not None
    header, rule, line = section.splitlines()[:3]
    assert header.startswith("| setup | rounds passed | cgroup peak MB | spread | idle/start |")
    assert rule.count("---") == header.count("|") - 1
    assert line == "| glibc | 2 of 2 | 290.0 | 20.0 | 1.70 | 0.20 | 19.0 | 2.0 | 50 | 20 |"
    assert section.splitlines()[-1] == spread.SPREAD_LINE
