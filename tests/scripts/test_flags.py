"""The shared flags, read once into typed options: the values argparse gives become the fields,
and the checks refuse on the typed options what they refused on the Namespace."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import pytest

from scripts.verify import flags


def parser_with(*groups: str) -> flags.Parser:
    parser = argparse.ArgumentParser(prog="test")
    if "service" in groups:
        flags.add_service(parser, limit_mode="none")
    if "verdict" in groups:
        flags.add_verdict(parser, "pss", "the metric", 0.01)
    if "output" in groups:
        flags.add_output(parser, "results/")
    if "output-no-plot" in groups:
        flags.add_output(parser, "results/", plot=False)
    return parser


def test_service_options_hold_the_flags_and_set_becomes_overrides() -> None:
    args = parser_with("service").parse_args(
        ["--web-concurrency", "2", "--set", "A_B=1", "--set", "C=x=y", "--set", "A_B=2"]
    )
    service = flags.ServiceOptions.of(args)
    assert service == flags.ServiceOptions(2, "none", ("A_B=1", "C=x=y", "A_B=2"))
    assert service.overrides() == {"A_B": "2", "C": "x=y"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--web-concurrency", "0"], "--web-concurrency must be at least 1"),
        (["--set", "lower=1"], "expected NAME=VALUE"),
        (["--set", "NOVALUE"], "expected NAME=VALUE"),
    ],
)
def test_check_service_refuses_what_cannot_start(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = parser_with("service")
    with pytest.raises(SystemExit) as exit_:
        flags.check_service(parser, flags.ServiceOptions.of(parser.parse_args(argv)))
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_verdict_options_hold_the_flags() -> None:
    args = parser_with("verdict").parse_args(["--limit-mb", "300", "--from-timeline", "t.json"])
    verdict = flags.VerdictOptions.of(args)
    assert verdict == flags.VerdictOptions(300.0, "pss", 0.01, Path("t.json"))


@pytest.mark.parametrize(
    ("verdict", "message"),
    [
        (flags.VerdictOptions(0.0, "pss", 0.0), "--limit-mb must be positive"),
        (flags.VerdictOptions(500.0, "pss", 1.5), "--max-failures is a share"),
    ],
)
def test_check_verdict_refuses_impossible_criteria(
    verdict: flags.VerdictOptions, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        flags.check_verdict(parser_with(), verdict)
    assert message in capsys.readouterr().err


def test_cgroup_metric_needs_a_limit_a_url_or_a_recording(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = parser_with()
    cgroup = flags.VerdictOptions(500.0, "cgroup", 0.0)
    with pytest.raises(SystemExit):
        flags.needs_cgroup(parser, cgroup, "none")
    assert "--metric cgroup needs a cgroup" in capsys.readouterr().err
    flags.needs_cgroup(parser, cgroup, "docker")
    flags.needs_cgroup(parser, cgroup, "none", remote=True)
    flags.needs_cgroup(parser, flags.VerdictOptions(500.0, "cgroup", 0.0, Path("t")), "none")
    flags.needs_cgroup(parser, flags.VerdictOptions(500.0, "pss", 0.0), "none")


def test_output_options_name_a_fresh_folder_unless_given_one() -> None:
    started = datetime(2024, 5, 6, 7, 8, 9)
    output = flags.OutputOptions.of(parser_with("output").parse_args(["--no-plot"]))
    assert output == flags.OutputOptions(None, plot=False)
    assert output.folder(started, "soak-%Y%m%d-%H%M%S") == Path("results/soak-20240506-070809")
    given = flags.OutputOptions.of(parser_with("output").parse_args(["--out", "here"]))
    assert given.folder(started, "%Y") == Path("here")
    assert given.plot


def test_output_without_a_plot_flag_never_plots() -> None:
    parser = parser_with("output-no-plot")
    assert flags.OutputOptions.of(parser.parse_args([])) == flags.OutputOptions(None, plot=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--no-plot"])
