"""The stall benchmark's arithmetic and verdict on fixed latencies; no server, no network."""

from __future__ import annotations

from datetime import datetime

import pytest

from lab.stall import command as stall
from lab.stall import figures as sf
from scripts.verify import flags
from scripts.verify.cli import standalone, standalone_parser


def latencies(ms: list[float], repeat: int = 1) -> list[float]:
    """Seconds, as the probe records them."""
    return [v / 1000 for v in ms * repeat]


def condition(
    name: str, p99_ms: float, releases: int = 0, errors: int = 0, probes: int = 1000
) -> sf.Condition:
    # 2% of the probes at p99_ms, the rest at 1 ms: the nearest-rank p99 is then p99_ms.
    slow = probes // 50
    summary = sf.summarize(latencies([1.0] * (probes - slow) + [p99_ms] * slow), errors)
    durations = [0.030] * releases
    return sf.Condition(name, summary, sf.summarize_releases(durations, [50 * sf.MB] * releases))


def result(quiet_p99: float, off_p99: float, releases: int = 40, **kw: int) -> sf.StallResult:
    return sf.StallResult(
        "jemalloc",
        condition(sf.QUIET, quiet_p99),
        condition(sf.OFF_LOOP, off_p99, releases=releases, **kw),
    )


def test_summary_is_in_milliseconds_with_p50_p99_and_max() -> None:
    summary = sf.summarize(latencies([1.0] * 980 + [20.0] * 15 + [90.0] * 5), errors=2)
    assert summary.probes == 1000
    assert summary.p50_ms == pytest.approx(1.0)
    assert summary.p99_ms == pytest.approx(20.0)  # the 990th of 1000 sorted: in the 20 ms band
    assert summary.max_ms == pytest.approx(90.0)
    assert summary.errors == 2
    assert summary.service_p99_ms is None


def test_summary_keeps_the_send_to_answer_p99_when_given() -> None:
    summary = sf.summarize(latencies([5.0], 200), service_s=latencies([1.0] * 199 + [3.0]))
    assert summary.p99_ms == pytest.approx(5.0)
    assert summary.service_p99_ms == pytest.approx(1.0)


def test_too_few_answers_cannot_be_judged() -> None:
    with pytest.raises(sf.NotJudgeable, match="fewer than"):
        sf.summarize(latencies([1.0], sf.MIN_PROBES - 1))


def test_release_summary_has_count_median_and_first_freed() -> None:
    summary = sf.summarize_releases([0.010, 0.050, 0.030], [200 * sf.MB, 0, -sf.MB])
    assert summary.count == 3
    assert summary.median_ms == pytest.approx(30.0)
    assert summary.first_freed_mb == pytest.approx(200.0)
    empty = sf.summarize_releases([], [])
    assert (empty.count, empty.median_ms, empty.first_freed_mb) == (0, None, None)


def test_within_the_target_passes() -> None:
    run = result(quiet_p99=2.0, off_p99=6.5)
    assert run.p99_delta_ms == pytest.approx(4.5)
    assert sf.judge(run, target_ms=5.0).passed


def test_at_the_target_exactly_passes_and_just_over_fails() -> None:
    assert sf.judge(result(2.0, 7.0), 5.0).passed
    verdict = sf.judge(result(2.0, 7.5), 5.0)
    assert not verdict.passed
    assert verdict.reasons == [
        "p99 of /healthz rose 5.5 ms with releases running (2.0 -> 7.5 ms), over the 5 ms allowed"
    ]


def test_a_faster_p99_with_releases_passes() -> None:
    run = result(quiet_p99=9.0, off_p99=3.0)
    assert run.p99_delta_ms == pytest.approx(-6.0)
    assert sf.judge(run).passed


def test_failed_probes_fail_the_verdict_even_within_the_target() -> None:
    verdict = sf.judge(result(2.0, 2.5, errors=3))
    assert not verdict.passed
    assert verdict.reasons == ["3 of 1000 /healthz probes failed with releases off the loop"]


def test_no_release_while_probing_cannot_be_judged() -> None:
    with pytest.raises(sf.NotJudgeable, match="no release completed"):
        sf.judge(result(2.0, 2.0, releases=0))


def test_a_release_during_the_quiet_condition_cannot_be_judged() -> None:
    run = sf.StallResult(
        "glibc", condition(sf.QUIET, 2.0, releases=1), condition(sf.OFF_LOOP, 3.0, releases=9)
    )
    with pytest.raises(sf.NotJudgeable, match="during the no-release condition"):
        sf.judge(run)


def test_table_has_a_row_per_condition_with_the_verdict_on_the_judged_one() -> None:
    run = sf.StallResult(
        "glibc",
        condition(sf.QUIET, 2.0),
        condition(sf.OFF_LOOP, 3.5, releases=40),
        condition(sf.ON_LOOP, 120.0, releases=35),
    )
    quiet, off_loop, on_loop = sf.table_cells(run, sf.judge(run))
    assert quiet[:3] == ["glibc", sf.QUIET, "1000"]
    assert quiet[-2:] == ["-", ""]  # no difference to itself, no verdict
    assert off_loop[4:7] == ["1.0", "3.5", "3.5"]  # p50, p99, max
    assert off_loop[-4:] == ["40", "30.0", "+1.5", "PASS"]
    assert on_loop[-2:] == ["+118.0", "contrast"]
    lines = sf.render_markdown([quiet, off_loop, on_loop]).splitlines()
    assert lines[0].startswith("| profile | condition | probes | RSS MB | p50 ms | p99 ms |")
    assert lines[1].startswith("|---|---|---:|")
    assert lines[3] == "| " + " | ".join(off_loop) + " |"


def test_a_profile_not_made_keeps_the_table_intact() -> None:
    row = sf.not_made_row("jemalloc", "server exited with code 2 | configuration error: x")
    line = sf.render_markdown([row]).splitlines()[2]
    assert line.count("|") == len(sf.HEADER) + 1
    assert line.endswith("| NOT MADE |")


def test_exit_code_is_2_if_any_not_made_else_1_if_any_failed() -> None:
    passed, failed = sf.StallVerdict(True), sf.StallVerdict(False, ["slow"])
    assert stall.exit_code([passed, passed]) == 0
    assert stall.exit_code([passed, failed]) == 1
    assert stall.exit_code([failed, None]) == 2
    assert stall.exit_code([]) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--compare", "--profile", "glibc"],
        ["--probes", "10"],
        ["--interval-ms", "0"],
        ["--grow-posts", "0"],
        ["--release-every-ms", "-1"],
    ],
)
def test_cli_refuses_arguments_that_cannot_make_a_run(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        standalone(stall.COMMAND, "python -m lab.stall", argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_flags_become_options_in_ms_and_settings_in_seconds() -> None:
    argv = ["--interval-ms", "20", "--release-every-ms", "0", "--no-inline", "--probes", "500"]
    args = standalone_parser(stall.COMMAND, "python -m lab.stall").parse_args(argv)
    args.argv = argv
    options = stall.COMMAND.parse(args)
    assert isinstance(options, stall.StallOptions)
    assert (options.interval_ms, options.inline, options.argv) == (20.0, False, tuple(argv))
    settings = options.settings()
    assert (settings.probes, settings.interval_s, settings.release_every_s) == (500, 0.02, 0.0)
    assert not settings.inline


def test_the_context_names_the_command_and_the_target() -> None:
    options = stall.StallOptions(flags.OutputOptions(None), target_ms=7.0, argv=("--compare",))
    lines = stall.context_lines(options, options.settings(), datetime(2024, 1, 2).astimezone())
    assert lines[0] == "command: `python -m lab.stall --compare`"
    assert "within 7 ms of p99 with none" in lines[3]


def test_an_unknown_profile_is_a_run_not_made(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--profile", "hoard", "--out", "/nonexistent/never-written"]
    assert standalone(stall.COMMAND, "python -m lab.stall", argv) == 2
    assert "not a profile" in capsys.readouterr().err
