"""Publishing a run: the results file keeps what the run wrote, and the marked tables follow it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from scripts.verify import cli
from scripts.verify.core.health import HealthFigures
from scripts.verify.core.report import Row, summary_json
from scripts.verify.publish import (
    ROOT,
    NotPublished,
    PublishOptions,
    cells,
    entry_of,
    entry_of_runs,
    figures,
    kind_of,
    publish,
    rewrite,
    table,
)


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


def test_what_stayed_is_published_under_the_table_and_its_numbers_are_figures(
    tmp_path: Path,
) -> None:
    stayed = "what stayed (status route): live objects +1.0 MB, free memory +40.7 MB; try it"
    rows = [dataclasses.replace(a_row("glibc", 86.6), stayed=stayed), a_row("default", 55.0)]
    run_dir = tmp_path / "20261205-200000"
    run_dir.mkdir()
    summary = summary_json("own service", rows, ["command: `verify compare`"], None)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    entry = entry_of(run_dir, "bench")
    lines = table("bench", entry).splitlines()
    assert lines[-1] == f"- glibc: {stayed}" and lines[-2] == ""
    assert len([line for line in lines if line.startswith("|")]) == 4  # header, rule, two rows
    assert "40.7" in figures({"bench": entry}) and "40.7" not in cells("bench", entry)


def test_paths_inside_the_repository_are_published_from_its_root(tmp_path: Path) -> None:
    scenario = f"scenario: {ROOT}/examples/login/locustfile.py under the spike-then-idle shape"
    entry = entry_of(a_bench(tmp_path, ["command: `verify compare`", scenario]), "bench")
    assert entry["context"] == [
        "scenario: examples/login/locustfile.py under the spike-then-idle shape"
    ]


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
    quoted = "prose names `<!-- figures:bench -->` in a line\n"
    assert rewrite(quoted + written, "bench", entry) == quoted + written  # not a marker


def test_publishing_writes_the_results_file_and_leaves_other_entries(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps({"slow-readers": {"kept": True}}))
    run_dir = a_bench(tmp_path, ["command: `python -m scripts.verify compare`"])
    written = publish([run_dir], "bench", path=figures, documents=())
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
        publish([run_dir], "bench", path=figures, documents=[page])
    assert figures.read_text() == "{}"
    assert page.read_text() == "<!-- figures:bench -->\n| old |\n"


def a_flood(tmp_path: Path, name: str, command: str, goodput: float) -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    level = {
        "kind": "flood", "profile": "jemalloc-nopymalloc", "level": 1, "clients": 2,
        "statuses": {"201": 50}, "connection_errors": {}, "goodput_per_s": goodput,
        "accepted_p50_s": 1.0, "accepted_p99_s": 2.0, "peak_working_set_mb": 230.0,
        "oom_kills": 0, "alive": True, "health_worst_s": 0.2,
    }  # fmt: skip
    context = [f"command: `{command}`", f"started {name}"]
    (run_dir / "overload.json").write_text(json.dumps({"context": context, "runs": [level]}))
    return run_dir


def test_repeats_of_one_command_are_one_entry_with_their_rows_in_turn(tmp_path: Path) -> None:
    command = "python -m scripts.verify overload --levels 1 --set MEMORY_ADMISSION=0"
    runs = [a_flood(tmp_path, f"off-{n}", command, g) for n, g in ((1, 3.08), (2, 3.15))]
    entry = entry_of_runs(runs, "flood")
    assert entry["source"] == "off-1, off-2"
    assert entry["context"] == ["started off-1", "started off-2"]
    goodput = [row.split(" | ")[7] for row in table("flood:admission-off", entry).splitlines()[2:]]
    assert goodput == ["3.08", "3.15"]


def test_runs_of_different_commands_or_several_benches_are_not_one_entry(tmp_path: Path) -> None:
    one = a_flood(tmp_path, "on", "python -m scripts.verify overload --levels 1", 3.5)
    other = a_flood(tmp_path, "off", "python -m scripts.verify overload --levels 4", 3.1)
    with pytest.raises(NotPublished, match="repeats of one command"):
        entry_of_runs([one, other], "flood")
    bench = a_bench(tmp_path, ["command: `python -m scripts.verify compare`"])
    with pytest.raises(NotPublished, match="one run"):
        entry_of_runs([bench, bench], "bench")


@pytest.mark.parametrize("name", ["flood:hostile", "slow-readers:two-workers", "soak:w2-8"])
def test_a_labelled_name_is_another_run_of_its_kind(name: str) -> None:
    assert kind_of(name) == name.partition(":")[0]


@pytest.mark.parametrize(
    "name", ["floods", "flood:", "flood:Hostile", "flood:a b", ":x", "bench:x:y"]
)
def test_a_name_that_is_no_kind_and_label_is_refused(name: str) -> None:
    with pytest.raises(NotPublished, match="not a name"):
        kind_of(name)


def test_a_labelled_entry_is_written_into_its_own_marked_table(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    page = tmp_path / "page.md"
    page.write_text("<!-- figures:flood:hostile -->\n<!-- /figures:flood:hostile -->\n")
    run_dir = a_flood(tmp_path, "hostile", "python -m scripts.verify overload --levels 32", 2.4)
    publish([run_dir], "flood:hostile", path=figures, documents=[page])
    assert "| jemalloc-nopymalloc | 1x | 2 | 50 |" in page.read_text()
    assert set(json.loads(figures.read_text())) == {"flood:hostile"}


def test_the_command_line_becomes_typed_options(tmp_path: Path) -> None:
    argv = ["publish", str(tmp_path), str(tmp_path), "--as", "flood:hostile", "--command", "c"]
    args = cli.build_parser().parse_args(argv)
    options = args.command.parse(args)
    assert options == PublishOptions((tmp_path, tmp_path), "flood:hostile", "c")


@pytest.mark.parametrize("how", [["missing", "--as", "bench"], [".", "--as", "floods"]])
def test_a_missing_run_or_a_name_of_no_kind_is_refused_by_the_parser(
    how: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["publish", *how])
    assert stopped.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_setups_marker_shows_each_setups_mean_and_spread_alone(tmp_path: Path) -> None:
    entry = entry_of(a_bench(tmp_path, ["command: `x`"]), "bench")
    entry["rows"] = [
        dict(row, label=f"{row['label']} #{n}") for n in (1, 2) for row in entry["rows"]
    ]
    text = "<!-- figures:bench setups -->\n<!-- /figures:bench setups -->\n"
    written = rewrite(text, "bench", entry)
    assert written.splitlines()[1].startswith("| setup | rounds passed |")
    assert "| run |" not in written
    assert rewrite(written, "bench", entry) == written
    entry["rows"] = entry["rows"][:1]
    with pytest.raises(NotPublished, match="no setups"):
        rewrite(text, "bench", entry)


def test_a_slow_body_flood_is_published_with_its_posts_alone_and_flooded(tmp_path: Path) -> None:
    run_dir = tmp_path / "slow-bodies"
    run_dir.mkdir()
    posts = {"sent": 20, "created": 19, "statuses": {"201": 19, "503": 1}, "errors": 0}
    runs = [
        {"kind": "flood"},  # another kind's run in the same file: not this entry's
        {
            "kind": "slow_bodies", "profile": "baseline", "server": "uvicorn", "attackers": 40,
            "declared_mb": 6.68, "quiet": {**posts, "share": 0.95},
            "flooded": {**posts, "created": 13, "share": 0.65}, "peak_reserved_mb": None,
            "oom_kills": 0, "alive": True,
        },
    ]  # fmt: skip
    context = ["command: `python -m scripts.verify overload --slow-bodies 40`"]
    (run_dir / "overload.json").write_text(json.dumps({"context": context, "runs": runs}))
    entry = entry_of(run_dir, "slow-bodies")
    (row,) = table("slow-bodies", entry).splitlines()[2:]
    assert row == "| baseline | uvicorn | 40 | 6.7 | 19 / 20 | 13 / 20 | 65% | - | 0 | yes |"
