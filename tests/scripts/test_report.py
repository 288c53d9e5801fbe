"""The summary table: figures, ratios to the baseline row, Markdown that renders as a table."""

from __future__ import annotations

from scripts.verify.core.report import (
    COLUMNS,
    Row,
    render_markdown,
    render_text,
    summary_markdown,
)


def row(
    label: str,
    idle_mb: float,
    status: str = "PASS",
    reasons: tuple[str, ...] = (),
    restarts: int | None = 0,
    results_lost: float | None = 0.0,
) -> Row:
    return Row(
        label=label,
        start_mb=50.0,
        peak_mb=400.0,
        idle_mb=idle_mb,
        returned=(400 - idle_mb) / 350,
        to_return_s=12.0,
        idle_ratio=idle_mb / 50.0,
        to_target_s=None if idle_mb > 75.0 else 8.0,
        rps=20.0,
        p50_ms=100.0,
        p99_ms=900.0,
        failures=0,
        status=status,
        reasons=reasons,
        restarts=restarts,
        results_lost=results_lost,
    )


def test_text_table_has_a_row_per_run_and_the_reasons_below() -> None:
    text = render_text([row("jemalloc", 120.0), row("baseline", 380.0, "FAIL", ("kept it",))])
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["run", "start", "MB", "peak"]
    assert lines[2].startswith("jemalloc") and lines[2].rstrip().endswith("PASS")
    assert "120.0" in lines[2] and "80%" in lines[2]
    assert lines[-1] == "baseline: kept it"


def test_each_figure_is_also_a_ratio_to_the_baseline_row() -> None:
    text = render_markdown([row("baseline", 400.0, "FAIL"), row("jemalloc", 100.0)], "baseline")
    baseline_line, jemalloc_line = text.splitlines()[2:]
    assert "(" not in baseline_line  # no ratio of the baseline to itself
    assert "100.0 (0.25x)" in jemalloc_line
    assert "50.0 (1.00x)" in jemalloc_line
    assert "(-)" in jemalloc_line  # 0 failures against 0: no ratio


def test_a_runs_own_ratio_and_time_to_target_get_no_baseline_ratio() -> None:
    text = render_markdown([row("baseline", 400.0, "FAIL"), row("jemalloc", 60.0)], "baseline")
    header, _, baseline_line, jemalloc_line = text.splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]
    cells = [cell.strip() for cell in jemalloc_line.strip("|").split("|")]
    base = [cell.strip() for cell in baseline_line.strip("|").split("|")]
    assert cells[names.index("idle/start")] == "1.20"
    assert cells[names.index("to 1.5x s")] == "8"
    assert base[names.index("idle/start")] == "8.00"
    assert base[names.index("to 1.5x s")] == "n/a"  # never settled under 1.5x its start


def test_a_run_not_made_shows_as_such() -> None:
    text = render_markdown([Row.not_made("jemalloc", "libjemalloc.so.2 missing")])
    assert "NOT MADE" in text and text.count("n/a") == len(COLUMNS)


def test_state_dropped_is_shown_as_counted_without_a_ratio() -> None:
    rows = [row("baseline", 400.0, "FAIL"), row("recycle", 200.0, restarts=6, results_lost=0.55)]
    rows.append(row("remote", 100.0, restarts=None, results_lost=None))
    header, _, baseline_line, recycle_line, remote_line = render_markdown(
        rows, "baseline"
    ).splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]

    def cell(line: str, name: str) -> str:
        return [c.strip() for c in line.strip("|").split("|")][names.index(name)]

    assert (cell(baseline_line, "restarts"), cell(baseline_line, "results lost")) == ("0", "0%")
    # No ratio: against a baseline of 0 it would say nothing.
    assert (cell(recycle_line, "restarts"), cell(recycle_line, "results lost")) == ("6", "55%")
    assert (cell(remote_line, "restarts"), cell(remote_line, "results lost")) == ("n/a", "n/a")


def test_summary_markdown_lists_context_table_and_reasons() -> None:
    text = summary_markdown("Compared", [row("glibc", 300.0, "FAIL", ("returned 29%",))], ["x: y"])
    assert text.startswith("# Compared\n\n- x: y\n\n| run |")
    assert text.rstrip().endswith("- glibc: returned 29%")
