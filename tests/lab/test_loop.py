"""The loop benchmark's pure parts on fixed figures, and one tiny real run of its clients."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lab.loop import figures as lf
from lab.loop import gil
from lab.loop.__main__ import main
from scripts.verify.core.errors import EXIT_FAIL, EXIT_PASS


def run(setup: str, at_once: int, p99_ms: float, round_: int = 1, **kw: object) -> lf.Run:
    # 98 probes at 1 ms and 2 at p99_ms: the nearest-rank p99 (the 99th of 100) is p99_ms.
    defaults: dict[str, object] = {
        "probe_errors": 0,
        "seconds": 5.0,
        "statuses": {"201": 64},
        "load_errors": {},
    }
    defaults.update(kw)
    return lf.Run(setup, round_, at_once, [1.0] * 98 + [p99_ms] * 2, **defaults)  # type: ignore[arg-type]


def test_a_setup_is_a_name_a_checkout_and_its_own_settings() -> None:
    setup = lf.Setup.parse("change=/work/x,SWITCH_INTERVAL_MS=5,BULK_CONCURRENCY=1")
    assert setup == lf.Setup(
        "change", Path("/work/x"), {"SWITCH_INTERVAL_MS": "5", "BULK_CONCURRENCY": "1"}
    )
    assert lf.Setup.parse("today=../today").env == {}


@pytest.mark.parametrize("text", ["today", "=dir", "name=", "a=dir,NOVALUE", "a=dir,=1"])
def test_a_malformed_setup_says_the_form_it_takes(text: str) -> None:
    with pytest.raises(lf.SetupError, match="NAME=DIR|VAR=VALUE"):
        lf.Setup.parse(text)


def test_setups_alternate_within_each_round() -> None:
    assert lf.schedule(["today", "change"], 2) == [
        (1, "today"),
        (1, "change"),
        (2, "today"),
        (2, "change"),
    ]


def test_the_percentiles_are_the_nearest_rank_ones() -> None:
    r = run("change", 16, 40.0)
    assert (r.p50_ms, r.p99_ms, r.max_ms) == (1.0, 40.0, 40.0)
    assert r.as_dict()["probes"] == 100


def test_the_judged_setup_passes_only_when_every_round_is_within_the_target() -> None:
    runs = [run("today", 16, 200.0), run("change", 16, 40.0), run("change", 16, 49.9, 2)]
    assert lf.verdict(runs, "change", 16, 50.0) == []
    runs.append(run("change", 16, 60.0, 3))
    assert lf.verdict(runs, "change", 16, 50.0) == [
        "change, round 3, 16 in flight: p99 60.0 ms over 50 ms"
    ]


def test_failed_probes_or_posts_and_missing_runs_fail_the_verdict() -> None:
    assert lf.verdict([run("change", 16, 1.0, probe_errors=2)], "change", 16, 50.0) == [
        "change, round 1, 16 in flight: 2 probe(s) failed"
    ]
    failed = run("change", 16, 1.0, statuses={"201": 60, "422": 4})
    assert "posts failed" in lf.verdict([failed], "change", 16, 50.0)[0]
    retried = run("change", 16, 1.0, statuses={"201": 64, "503": 9})
    assert lf.verdict([retried], "change", 16, 50.0) == []
    assert lf.verdict([run("change", 8, 1.0)], "change", 16, 50.0) == [
        "change: no run at 16 in flight"
    ]


def test_too_few_probes_are_no_p99() -> None:
    short = lf.Run("change", 1, 16, [1.0] * 10, 0, 1.0, {"201": 64}, {})
    assert "fewer than" in lf.verdict([short], "change", 16, 50.0)[0]


def test_the_table_has_a_row_per_run_in_the_order_run() -> None:
    text = lf.table([run("today", 8, 30.0), run("change", 8, 20.0)])
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| 1 | today | 8 | 100 | 1.0 | 30.0 |")
    assert all(line.count("|") == len(lf.COLUMNS) + 1 for line in lines)


def test_bad_flags_are_refused_with_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--setup", "a=.", "--setup", "a=."])
    assert info.value.code == 2
    assert "a name of its own" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--setup", f"a={tmp_path}", "--setup", "b=."])
    assert "without app/main.py" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_real_run_measures_both_setups(tmp_path: Path) -> None:
    """Two real servers of this checkout, a load and a probe process each; too short for a p99
    that means anything, so only what was measured is checked, not the verdict."""
    repo = Path(__file__).resolve().parents[2]
    code = main(
        [
            "--setup",
            f"a={repo}",
            "--setup",
            f"b={repo},SWITCH_INTERVAL_MS=5",
            "--rounds",
            "1",
            "--at-once",
            "2",
            "--posts",
            "4",
            "--records",
            "200",
            "--out",
            str(tmp_path),
        ]
    )
    assert code in (EXIT_PASS, EXIT_FAIL)
    found = json.loads((tmp_path / "loop.json").read_text())
    assert [(r["setup"], r["at_once"]) for r in found["runs"]] == [("a", 2), ("b", 2)]
    assert all(r["statuses"] == {"201": 4} and r["probes"] > 0 for r in found["runs"])
    assert (tmp_path / "a-1.log").exists() and (tmp_path / "b-1.log").exists()
    assert "GIL switch interval 5 ms" in (tmp_path / "b-1.log").read_text()


def test_the_gil_demonstration_measures_each_interval_per_round_and_restores_it() -> None:
    before = sys.getswitchinterval()
    found = gil.measure((5.0, 1.0), threads=1, rounds=2, calls=3)
    assert list(found) == [5.0, 1.0]
    assert all(
        len(pairs) == 2 and all(p50 <= p99 for p50, p99 in pairs) for pairs in found.values()
    )
    assert sys.getswitchinterval() == before
