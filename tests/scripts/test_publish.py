"""Publishing a run: the results file keeps what the run wrote, and the marked tables follow it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.verify.core.health import HealthFigures
from scripts.verify.core.report import Row, summary_json
from scripts.verify.publish import NotPublished, cells, entry_of, publish, rewrite, table


def a_row(label: str, idle_mb: float) -> Row:
    return Row(label, 50.0, 200.0, idle_mb, 0.9, 2.0, idle_mb / 50.0, 61.0, 17.5, 90.0,
               1500.0, 0, "PASS", (), HealthFigures(100, 6.0, 49.0, 132.0), 0, 0.0)  # fmt: skip


def a_bench(tmp_path: Path, context: list[str]) -> Path:
    rows = [a_row("baseline", 280.0), a_row("jemalloc-nopymalloc", 62.5)]
    run_dir = tmp_path / "20261202-130000"
    run_dir.mkdir()
    summary = summary_json("Allocator profiles compared", rows, context, "baseline")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_a_published_bench_holds_the_command_and_prints_the_runs_table(tmp_path: Path) -> None:
    run_dir = a_bench(tmp_path, ["command: `python -m scripts.verify compare`", "started x"])
    entry = entry_of(run_dir, "bench")
    assert entry["command"] == "python -m scripts.verify compare"
    assert entry["context"] == ["started x"]
    text = table("bench", entry)
    default = text.splitlines()[3]
    assert default.startswith(
        "| jemalloc-nopymalloc | 50.0 (1.00x) | 200.0 (1.00x) | 62.5 (0.22x) | 1.25 |"
    )
    assert {"62.5", "0.22x", "1.25", "90%", "132"} <= set(cells("bench", entry))


def test_a_run_that_does_not_name_its_command_needs_one(tmp_path: Path) -> None:
    run_dir = a_bench(tmp_path, ["started x"])
    with pytest.raises(NotPublished, match="--command"):
        entry_of(run_dir, "bench")
    assert entry_of(run_dir, "bench", "make bench")["command"] == "make bench"


def test_a_run_of_another_kind_is_refused(tmp_path: Path) -> None:
    run_dir = a_bench(tmp_path, ["command: `x`"])
    with pytest.raises(NotPublished, match="overload.json"):
        entry_of(run_dir, "slow-readers")


def test_marked_tables_are_rewritten_and_the_prose_around_them_kept(tmp_path: Path) -> None:
    entry = entry_of(a_bench(tmp_path, ["command: `x`"]), "bench")
    text = "before\n<!-- figures:bench -->\n| old |\n<!-- /figures:bench -->\nafter 1.25x\n"
    written = rewrite(text, "bench", entry)
    assert written.startswith("before\n<!-- figures:bench -->\n| run | start MB |")
    assert written.endswith("\n<!-- /figures:bench -->\nafter 1.25x\n")
    assert "| old |" not in written
    assert rewrite(written, "bench", entry) == written
    with pytest.raises(NotPublished, match="not closed"):
        rewrite("<!-- figures:bench -->\n| old |\n", "bench", entry)


def test_publishing_writes_the_results_file_and_leaves_other_entries(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps({"slow-readers": {"kept": True}}))
    run_dir = a_bench(tmp_path, ["command: `python -m scripts.verify compare`"])
    written = publish(run_dir, "bench", path=figures, documents=())
    data = json.loads(figures.read_text())
    assert written == [figures]
    assert data["slow-readers"] == {"kept": True}
    assert data["bench"]["source"] == "20261202-130000"
    assert len(data["bench"]["rows"]) == 2


def test_a_soak_is_kept_as_its_table_printed(tmp_path: Path) -> None:
    run_dir = tmp_path / "soak-20261202-140000"
    run_dir.mkdir()
    soak = {
        "label": "jemalloc-nopymalloc w1",
        "context": ["command: `python -m scripts.verify soak`", "profile jemalloc-nopymalloc"],
        "header": ["cycle", "start MB", "idle MB"],
        "rows": [["1", "41.0", "120.7"], ["2", "120.6", "123.8"]],
        "lines": ["verdict: PASS"],
    }
    (run_dir / "soak.json").write_text(json.dumps(soak))
    entry = entry_of(run_dir, "soak")
    assert entry["command"] == "python -m scripts.verify soak"
    rows = table("soak", entry).splitlines()[2:]
    assert rows == ["| 1 | 41.0 | 120.7 |", "| 2 | 120.6 | 123.8 |"]
    assert {"41.0", "123.8"} <= set(cells("soak", entry))


def test_a_page_with_an_open_marker_stops_the_publication_before_any_file_changes(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "figures.json"
    figures.write_text("{}")
    page = tmp_path / "page.md"
    page.write_text("<!-- figures:bench -->\n| old |\n")
    run_dir = a_bench(tmp_path, ["command: `python -m scripts.verify compare`"])
    with pytest.raises(NotPublished, match="not closed"):
        publish(run_dir, "bench", path=figures, documents=[page])
    assert figures.read_text() == "{}"
    assert page.read_text() == "<!-- figures:bench -->\n| old |\n"
