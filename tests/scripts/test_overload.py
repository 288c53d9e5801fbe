"""The overload subcommand: its flags, its verdict and its table, on made-up runs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from scripts.verify import cli
from scripts.verify.overload.command import (
    COST_COLUMNS,
    SLOW_BODY_COLUMNS,
    OverloadOptions,
    cost_cells,
    flood_cells,
    judge,
    judge_slow,
    judge_slow_bodies,
    render,
    slow_body_cells,
    slow_cells,
)
from scripts.verify.overload.cost import BodyShape, CostRun, body_of
from scripts.verify.overload.flood import FloodResult, HealthResult
from scripts.verify.overload.run import OverloadRun, OverloadSettings
from scripts.verify.overload.slowbody import Posts, SlowBodyRun, SlowBodySettings
from scripts.verify.overload.slowread import ReaderCounts, SlowReadRun, SlowReadSettings

MB = 1024 * 1024


def made_run(clients: int, goodput: float, peak_mb: float, oom: int = 0) -> OverloadRun:
    flood = FloodResult(seconds=10.0, statuses=Counter({201: int(goodput * 10), 503: 40}))
    flood.accepted_latencies = [0.5, 0.7, 1.2]
    return OverloadRun(
        "jemalloc-nopymalloc",
        OverloadSettings(clients=clients),
        flood,
        HealthResult(latencies=[0.01, 0.2]),
        int(peak_mb * MB),
        int(peak_mb * MB),
        oom,
        oom == 0,
        0.0,
        Path("server.log"),
    )


def test_targets_met() -> None:
    runs = [made_run(2, 4.0, 220), made_run(32, 3.4, 300)]
    assert judge(runs, limit_mb=500, min_share=0.8) == []


@pytest.mark.parametrize(
    ("runs", "needle"),
    [
        ([made_run(2, 4.0, 220), made_run(32, 3.0, 300)], "goodput 3.00/s"),
        ([made_run(2, 4.0, 220), made_run(32, 4.0, 455)], "not under 450 MB"),
        ([made_run(2, 4.0, 220), made_run(32, 4.0, 300, oom=1)], "1 OOM kill(s)"),
    ],
)
def test_each_target_can_fail(runs: list[OverloadRun], needle: str) -> None:
    reasons = judge(runs, limit_mb=500, min_share=0.8)
    assert len(reasons) == 1 and needle in reasons[0]


def test_the_table_has_a_cell_per_column() -> None:
    table = render([flood_cells({**made_run(2, 4.0, 220).as_dict(), "level": 1})])
    header, rule, line = table.splitlines()
    assert header.count("|") == rule.count("|") == line.count("|")
    assert "| 1x | 2 | 40 | 40 | 0 | 0 | 4.00 |" in line


def test_slow_readers_are_judged_on_what_a_user_sees() -> None:
    def made(oom: int, healthy: int, whole: bool) -> SlowReadRun:
        health = HealthResult(latencies=[0.01] * healthy, failures=100 - healthy)
        return SlowReadRun("p", SlowReadSettings(readers=300), ReaderCounts(), 240, health,
                           9 * 2**20, 80 * 2**20, 120 * 2**20, 120 * 2**20, 300 * 32768,
                           oom, oom == 0,
                           whole, Path("log"))

    assert judge_slow(made(0, 100, True)) == []
    assert "OOM" in judge_slow(made(1, 100, False))[0]
    assert "98.0%" in judge_slow(made(0, 98, True))[0]
    # 98.7% is a miss too, and says so in a way that cannot be read as 99%.
    health = HealthResult(latencies=[0.01] * 987, failures=13)
    near = SlowReadRun("p", SlowReadSettings(readers=300), ReaderCounts(), 240, health,
                       9 * 2**20, 80 * 2**20, 120 * 2**20, 120 * 2**20, None, 0, True, True,
                       Path("log"))
    assert "98.7% of probes, under 99%" in judge_slow(near)[0]
    assert "whole" in judge_slow(made(0, 100, False))[0]
    cells = slow_cells(made(0, 100, True).as_dict())
    assert cells[4:7] == ["40", "137", "32"]  # growth MB, per reader KB (40 MB / 300), kernel


@pytest.mark.parametrize(
    "argv",
    [
        ["overload", "--levels", "1,x"],
        ["overload", "--levels", "0"],
        ["overload", "--levels", "none", "--slow-readers", "none"],
        ["overload", "--slow-readers", "0"],
        ["overload", "--slow-readers", "many"],
        ["overload", "--slow-bodies", "0"],
        ["overload", "--slow-bodies", "x"],
        ["overload", "--min-served-share", "1.5"],
        ["overload", "--seconds", "0"],
        ["overload", "--min-goodput-share", "2"],
        ["overload", "--limit-mode", "none"],
        ["overload", "--set", "lower=1"],
        ["overload", "--body-cost", "many"],
        ["overload", "--body-cost", "0"],
        ["overload", "--body-cost", "20000:-1"],
    ],
)
def test_bad_flags_are_refused_by_the_parser(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_flags_become_typed_options_their_lists_kept_as_given() -> None:
    argv = ["overload", "--levels", "1,2", "--slow-readers", "none", "--chunked", "--set", "A=1"]
    args = cli.build_parser().parse_args(argv)
    args.argv = argv
    options = args.command.parse(args)
    assert isinstance(options, OverloadOptions)
    assert (options.levels, options.slow_readers, options.body_cost) == ("1,2", "none", "none")
    assert options.chunked and not options.ignore_retry_after
    assert options.service.limit_mode == "cgroup" and options.service.overrides() == {"A": "1"}
    assert not options.output.plot  # overload draws no plot
    assert options.argv == tuple(argv)


def test_listed_among_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "overload" in capsys.readouterr().out


def test_a_body_shape_is_records_and_an_optional_note() -> None:
    assert BodyShape.parse("20000") == BodyShape(20_000, 0)
    assert BodyShape.parse(" 3000:300 ") == BodyShape(3_000, 300)
    long, short = body_of(BodyShape(50, 300)), body_of(BodyShape(50))
    records = json.loads(long)["records"]
    assert len(records) == 50 and {r["note"] for r in records} == {"x" * 300}
    assert len(json.loads(short)["records"]) == 50 and len(short) < len(long) / 2
    assert body_of(BodyShape(50)) == short  # deterministic: the same body on every run


def test_a_submission_s_cost_is_its_peak_growth_per_body_byte() -> None:
    run = CostRun("p", BodyShape(20_000), 2 * 2**20, 201, 60 * 2**20, 88 * 2**20)
    figures = run.as_dict()
    assert figures["growth_mb"] == 28.0
    assert figures["per_body_byte"] == 14.0
    assert cost_cells(figures) == ["p", "20,000", "105", "2.00", "28.0", "14.0x"]
    assert len(cost_cells(figures)) == len(COST_COLUMNS)
    assert CostRun("p", BodyShape(1), 10, 201, 50, 40).growth_bytes == 0  # never negative


def made_slow_bodies(oom: int, created: int, sent: int, server: str = "granian") -> SlowBodyRun:
    settings = SlowBodySettings(overrides={"SERVER": server})
    return SlowBodyRun(
        "p", settings, "/bulk/sync", 8 * MB, Posts({201: 20}), Posts({201: created, 503: sent -
        created}), 95 * MB, 390 * MB, oom, oom == 0, "connected:   40", Path("log"),
    )  # fmt: skip


def test_slow_bodies_are_judged_on_the_legitimate_posts_answered() -> None:
    assert judge_slow_bodies(made_slow_bodies(0, 19, 20), 0.9) == []
    assert "OOM" in judge_slow_bodies(made_slow_bodies(1, 20, 20), 0.9)[0]
    (reason,) = judge_slow_bodies(made_slow_bodies(0, 13, 20), 0.9)
    assert "13 of 20 legitimate posts answered 201, not 90%" in reason
    run = made_slow_bodies(0, 13, 20)
    assert run.attack_connected == 40
    cells = slow_body_cells(run.as_dict())
    assert cells[1:3] == ["granian", "40"] and cells[4:8] == ["20 / 20", "13 / 20", "65%", "95"]
    assert len(cells) == len(SLOW_BODY_COLUMNS)
