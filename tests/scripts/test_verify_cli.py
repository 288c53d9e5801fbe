"""The command line: exit codes on recorded timelines, arguments refused before any run, and
the typed options a command gets in place of argparse's Namespace."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from scripts.verify import flags, spike
from scripts.verify.cli import build_parser, launch, main

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_recorded_passing_run_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--from-timeline", str(FIXTURES / "timeline_passes.json")]) == 0
    assert "PASS" in capsys.readouterr().out


def test_a_recorded_run_that_stays_high_exits_1_with_the_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--from-timeline", str(FIXTURES / "timeline_stays_high.json")]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "returned" in out and "MB" in out


def test_a_recorded_run_over_the_limit_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "timeline_over_limit.json"
    assert main(["run", "--from-timeline", str(path), "--limit-mb", "150"]) == 1
    assert "limit" in capsys.readouterr().out


def test_an_unreadable_timeline_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "timeline.json"
    broken.write_text("{")
    assert main(["run", "--from-timeline", str(broken)]) == 2
    assert "run not made" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--url", "http://127.0.0.1:9", "--token", ""],
        ["run", "--metric", "cgroup"],
        ["run", "--min-returned", "1.5"],
        ["run", "--max-failures", "2"],
        ["compare", "--profile", "glibc"],
        ["run", "--url", "http://127.0.0.1:9", "--token", "t" * 32, "--limit-mode", "docker"],
        ["run", "--preset", "huge"],
        ["run", "--set", "memory_cleanup=0"],
        ["run", "--set", "MEMORY_CLEANUP"],
        ["soak", "--max-failures", "3"],
        ["run", "--command", "serve", "--image", "theirs:1"],
        ["run", "--command", "serve", "--url", "http://127.0.0.1:9", "--token", "t" * 32],
        ["run", "--command", "serve", "--profile", "glibc"],
        ["run", "--command", "serve", "--web-concurrency", "2"],
        ["run", "--command", "serve", "--limit-mode", "docker"],
        ["run", "--image", "theirs:1", "--limit-mode", "cgroup"],
        ["run", "--command", "serve", "--locustfile", "/nonexistent/users.py"],
        ["run", "--command", "serve", "--health", "healthz"],
        ["compare", "--command", "serve", "--rounds", "1"],
        ["compare", "--command", "serve", "--limit-mode", "docker"],
        ["compare", "--command", "serve", "--web-concurrency", "2"],
        ["compare", "--rounds", "0"],
        ["compare", "--command", "serve", "--image", "theirs:1"],
        ["stall"],
        ["stack"],
        [],
    ],
)
def test_arguments_that_cannot_make_a_run_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2


def test_an_unknown_profile_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--profile", "hoard", "--out", str(tmp_path)]) == 2
    assert "hoard" in capsys.readouterr().err


def test_the_help_lists_the_users_tools_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out.split("commands:", 1)[1]
    rows = [line for line in listed.splitlines() if line.startswith("    ") and line[4:5].strip()]
    names = [row.split()[0] for row in rows]
    assert names[:4] == ["run", "compare", "soak", "overload"]
    assert "stall" not in names and "stack" not in names  # instruments: python -m lab.stall


def options_of(argv: list[str]) -> Any:
    """The options the subcommand in ``argv`` runs with, as cli.start makes them."""
    args = build_parser().parse_args(argv)
    args.argv = argv
    return args.command.parse(args)


def test_run_reads_its_flags_into_typed_options() -> None:
    argv = ["run", "--command", "serve {port}", "--token", "t", "--set", "A_B=1", "--no-plot"]
    options = options_of(argv)
    assert isinstance(options, spike.RunOptions)
    assert options.spike.own == spike.OwnServiceOptions("serve {port}", None, token="t")
    assert options.spike.service == flags.ServiceOptions(1, "none", ("A_B=1",))
    assert not options.spike.output.plot
    assert options.spike.metric == "pss"
    assert options.spike.argv == tuple(argv)
    assert (options.profile, options.image, options.url) == (None, None, None)


def test_compare_reads_its_rows_in_the_order_given() -> None:
    options = options_of(["compare", "--rows", "jemalloc, baseline"])
    assert isinstance(options, spike.CompareOptions)
    assert options.rows == ("jemalloc", "baseline")
    assert options_of(["compare"]).rows is None


def test_launch_parses_once_then_checks_and_runs_the_typed_options() -> None:
    seen: list[tuple[str, object]] = []

    def parse(args: argparse.Namespace) -> int:
        seen.append(("parse", args.value))
        return int(args.value) * 2

    def check(parser: flags.Parser, options: int) -> None:
        seen.append(("check", options))

    def run(options: int) -> int:
        seen.append(("run", options))
        return 1

    command = flags.Command("probe", "", "", lambda parser: None, parse, check, run)
    parser = argparse.ArgumentParser()
    assert launch(command, parser, argparse.Namespace(value="21")) == 1
    assert seen == [("parse", "21"), ("check", 42), ("run", 42)]
