"""The soak's bookkeeping and verdict, on a recorded soak of the image (3 short cycles, two
workers, 500 MB limit) and on made-up timelines for what a healthy run does not show: creep, a
failed request, an OOM kill, a replaced worker. No network, no Docker."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from app.memory.measure import MB
from scripts.verify import cli, flags
from scripts.verify.core import modes
from scripts.verify.core import phases as ph
from scripts.verify.core.errors import EXIT_FAIL, EXIT_NOT_MADE, EXIT_PASS, RunNotMade
from scripts.verify.core.loadrun import LoadStats
from scripts.verify.core.run import RunSettings
from scripts.verify.core.sampling import Sample
from scripts.verify.core.timeline import Timeline, read_json, write_json
from scripts.verify.core.verdict import Criteria
from scripts.verify.soak import command as soak
from scripts.verify.soak import cycles as cy
from scripts.verify.soak import report as soak_report
from scripts.verify.soak import run as soak_run
from scripts.verify.soak.presets import SOAK_PRESETS, SoakPreset
from scripts.verify.soak.verdict import (
    DriftRule,
    EndState,
    SoakCriteria,
    assess,
    drift_of,
    judge_soak,
)

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = FIXTURES / "soak_short_w2.json"
# The 10-minute default with two workers: each worker was OOM-killed once and replaced by
# uvicorn; the container itself kept running and docker reported OOMKilled false.
RECORDED_OOM = FIXTURES / "soak_default_w2_oom.json"

REST, RAMP, HOLD, IDLE = 3.0, 3.0, 20.0, 20.0
CREEPING = (90, 105, 120, 135)  # +15 MB a cycle: +45 MB, over the default 32 MB (or 35%)


def load(requests: int = 300, failures: int = 0) -> LoadStats:
    return LoadStats(requests, failures, 12.0, 150.0, 1800.0, requests // 3, 0)


def made_up(
    idles_mb: Sequence[float],
    peak_mb: float = 250.0,
    start_mb: float = 45.0,
    failures: Sequence[int] = (),
    **meta: Any,
) -> Timeline:
    """A soak timeline, one sample a second: at rest, up to ``peak_mb`` for the load, back to
    each cycle's idle figure five seconds into its idle window. PSS sits 10 MB above."""
    phases: list[ph.Phase] = []
    samples: list[Sample] = []
    t, level = 0.0, start_mb
    for idle_mb in idles_mb:
        marks = (t, t + REST, t + REST + RAMP + HOLD, t + REST + RAMP + HOLD + IDLE)
        phases += ph.run_phases(marks[0], marks[1], RAMP, marks[2], marks[3])
        for second in range(int(marks[0]), int(marks[3])):
            if second < marks[1]:
                value = level
            elif second < marks[2] + 5:
                value = peak_mb
            else:
                value = idle_mb
            samples.append(
                Sample(
                    t=float(second),
                    cgroup_working_set_bytes=int(value * MB),
                    pss_bytes=int((value + 10) * MB),
                    processes=1,
                )
            )
        t, level = marks[3], idle_mb
    samples.append(replace(samples[-1], t=t))
    count = len(idles_mb)
    return Timeline(
        meta={
            "label": "made-up",
            "idle_tail_seconds": 5,
            "cycles_planned": count,
            "cycles_run": count,
            **meta,
        },
        phases=phases,
        samples=samples,
        extra={"loads": [load(failures=f).as_dict() for f in (failures or [0] * count)]},
    )


def outcome_of(timeline: Timeline, criteria: SoakCriteria | None = None):  # type: ignore[no-untyped-def]
    return assess(timeline, criteria or SoakCriteria(), "cgroup")


# --- cycles on the timeline -------------------------------------------------------------------


def test_phases_split_into_cycles_of_four_end_to_end() -> None:
    timeline = made_up([90, 92, 91])
    parts = cy.split(timeline.phases)
    assert len(parts) == 3
    assert all([p.name for p in part] == list(ph.ORDER) for part in parts)
    assert parts[1][0].start == parts[0][-1].end


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda p: p[:-1], "cycles of 4"),
        (lambda p: [*p[:4], p[5], p[4], *p[6:]], "cycle 2"),
        (lambda p: [*p[:4], *cy.shift_phases(p[4:], 5.0)], "starts +5.000 s"),
    ],
)
def test_phases_that_are_not_whole_cycles_in_order_are_refused(cut, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ph.PhaseError, match=re.escape(message)):
        cy.split(cut(made_up([90, 92]).phases))


def test_each_cycle_gets_the_verifiers_figures_and_starts_where_the_last_one_idled() -> None:
    timeline = made_up([90, 95, 93])
    cycles = cy.cycles_of(timeline, "cgroup", 5, cy.loads_of(timeline))
    assert [c.index for c in cycles] == [1, 2, 3]
    assert [round(c.figures.idle_bytes / MB) for c in cycles if c.figures] == [90, 95, 93]
    assert [round(c.figures.start_bytes / MB) for c in cycles if c.figures] == [45, 90, 95]
    first = cycles[0].figures
    assert first is not None and first.returned == pytest.approx((250 - 90) / (250 - 45))
    assert cycles[0].pss is not None and cycles[0].pss.idle_bytes == int(100 * MB)
    assert all(c.load is not None and c.load.requests == 300 for c in cycles)


def test_a_cycle_the_service_died_in_has_no_figures_and_fails_the_soak() -> None:
    timeline = made_up([90, 95], cycles_planned=3, cycles_run=2)
    cut = timeline.phases[-1].start + 2  # samples stop early in the last idle window
    timeline.samples = [s for s in timeline.samples if s.t <= cut]
    timeline.meta["died"] = "container exited with code 137 in cycle 2"
    outcome = outcome_of(timeline)
    assert outcome.cycles[1].figures is None
    assert not outcome.passed
    reasons = " | ".join(outcome.verdict.reasons)
    assert "code 137 in cycle 2" in reasons
    assert "only 2 of 3 cycles ran" in reasons
    assert "cycle 2: no samples" in reasons


def test_cycle_loads_add_up_and_keep_the_worst_percentiles() -> None:
    total = cy.total_load([load(300, 1), None, replace(load(100), p99_ms=9000.0)])
    assert total is not None
    assert (total.requests, total.failures, total.p99_ms) == (400, 1, 9000.0)
    assert total.requests_per_second == pytest.approx(12.0)
    assert cy.total_load([None]) is None


# --- the drift rule and the verdict -----------------------------------------------------------


def test_drift_allowed_is_the_larger_of_megabytes_and_share() -> None:
    rule = DriftRule(max_mb=24, max_share=0.15)
    assert rule.allowed_bytes(int(100 * MB)) == 24 * MB
    assert rule.allowed_bytes(int(300 * MB)) == pytest.approx(45 * MB)


def test_level_idle_figures_pass() -> None:
    outcome = outcome_of(made_up([90, 96, 94, 92]))
    assert outcome.passed, outcome.verdict.reasons
    assert outcome.drift is not None and outcome.drift.drift_bytes == int(2 * MB)


def test_idle_that_creeps_up_every_cycle_fails_on_drift() -> None:
    outcome = outcome_of(made_up(CREEPING))
    assert not outcome.passed
    assert outcome.drift is not None and outcome.drift.drift_bytes == int(45 * MB)
    assert any("crept" in r and "+45.0 MB" in r for r in outcome.verdict.reasons)


def test_drift_compares_the_last_cycle_with_the_first_not_a_high_one_between() -> None:
    assert outcome_of(made_up([90, 140, 95])).passed
    assert not outcome_of(made_up([90, 95, 140])).passed


def test_a_looser_rule_lets_the_same_creep_pass() -> None:
    timeline = made_up(CREEPING)
    assert outcome_of(timeline, SoakCriteria(drift=DriftRule(max_mb=50, max_share=0))).passed


def test_one_failed_request_fails_the_soak_and_names_its_cycle() -> None:
    outcome = outcome_of(made_up([90, 92, 91], failures=[0, 1, 0]))
    assert not outcome.passed
    assert any("1 of 900 requests failed (cycle 2: 1)" in r for r in outcome.verdict.reasons)
    lenient = SoakCriteria(max_failure_share=0.01)
    assert outcome_of(made_up([90, 92, 91], failures=[0, 1, 0]), lenient).passed


def test_an_idle_window_over_the_limit_fails_however_level_it_is() -> None:
    outcome = outcome_of(made_up([480, 505, 485], peak_mb=499), SoakCriteria(limit_mb=500))
    assert not outcome.passed
    assert [r for r in outcome.verdict.reasons if "limit" in r] == [
        "cycle 2: idle cgroup 505.0 MB is not under the 500 MB limit"
    ]


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"cgroup": {"oom_kills": 1}}, "1 OOM kill(s)"),
        ({"container_state": {"Running": True, "OOMKilled": True}}, "OOMKilled"),
        ({"container_state": {"Running": False, "OOMKilled": False}}, "not running"),
        ({"pids_at_start": [1, 11, 13], "pids_at_end": [1, 11, 40]}, "gone [13], new [40]"),
    ],
)
def test_an_oom_kill_a_stopped_container_or_a_replaced_worker_fails(
    meta: dict[str, Any], reason: str
) -> None:
    outcome = outcome_of(made_up([90, 92, 91], **meta))
    assert not outcome.passed
    assert any(reason in r for r in outcome.verdict.reasons), outcome.verdict.reasons


def test_a_single_cycle_has_no_drift_to_judge() -> None:
    timeline = made_up([90])
    cycles = cy.cycles_of(timeline, "cgroup", 5)
    assert drift_of(cycles, DriftRule()) is None
    verdict = judge_soak(cycles, SoakCriteria(), EndState(1, 1))
    assert not verdict.passed and "no drift to judge" in verdict.reasons[-1]


# --- a recorded soak ----------------------------------------------------------------------------


def test_recorded_soak_of_the_image_passes_with_its_workers_summed() -> None:
    timeline = read_json(RECORDED)
    outcome = outcome_of(timeline)
    assert outcome.passed, outcome.verdict.reasons
    assert len(outcome.cycles) == timeline.meta["cycles_planned"] == 3
    assert timeline.meta["web_concurrency"] == 2
    # Supervisor and two workers at least, every second: both workers are in every sample.
    assert min(s.processes or 0 for s in timeline.samples) >= 3
    for before, after in zip(outcome.cycles, outcome.cycles[1:], strict=False):
        assert before.figures is not None and after.figures is not None
        # A cycle starts at rest where the one before it idled: within 10% of it.
        assert after.figures.start_bytes == pytest.approx(before.figures.idle_bytes, rel=0.1)
        assert after.figures.peak_bytes > 1.3 * after.figures.start_bytes  # a real spike
    assert outcome.end.running is True and outcome.end.oom_killed is False


def with_last_cycle_grown(timeline: Timeline, working_set: int, pss: int) -> Timeline:
    last = cy.split(timeline.phases)[-1]
    timeline.samples = [
        replace(
            s,
            cgroup_working_set_bytes=(s.cgroup_working_set_bytes or 0) + working_set,
            pss_bytes=(s.pss_bytes or 0) + pss,
        )
        if s.t >= last[0].start
        else s
        for s in timeline.samples
    ]
    return timeline


def test_recorded_soak_with_memory_added_to_its_processes_last_cycle_fails_on_drift() -> None:
    outcome = outcome_of(with_last_cycle_grown(read_json(RECORDED), 60 * MB, 60 * MB))
    assert not outcome.passed
    assert any("crept: idle pss" in r for r in outcome.verdict.reasons)


def test_page_cache_alone_is_no_creep_but_still_counts_against_the_limit() -> None:
    """The working set grows by the page cache of the files the service writes; the processes'
    memory does not. No creep; the same growth past the limit still fails."""
    assert outcome_of(with_last_cycle_grown(read_json(RECORDED), 60 * MB, 0)).passed
    outcome = outcome_of(with_last_cycle_grown(read_json(RECORDED), 480 * MB, 0))
    assert not outcome.passed
    assert any("is not under the 500 MB limit" in r for r in outcome.verdict.reasons)
    assert not any("crept" in r for r in outcome.verdict.reasons)


def test_recorded_soak_whose_workers_were_oom_killed_fails_though_docker_saw_nothing() -> None:
    timeline = read_json(RECORDED_OOM)
    outcome = outcome_of(timeline)
    assert outcome.end.running is True and outcome.end.oom_killed is False
    assert not outcome.passed
    reasons = " | ".join(outcome.verdict.reasons)
    assert "2 OOM kill(s)" in reasons
    assert "server processes were replaced" in reasons
    assert "12 of 7193 requests failed (cycle 2: 5, cycle 4: 7)" in reasons
    # A replaced worker starts small again: the idle figure fell, which is why a restart is
    # judged on its own and not left to the drift.
    assert outcome.drift is not None and outcome.drift.drift_bytes < 0


class Stub:
    """A target as far as the soak asks it: its first process and what docker says."""

    def __init__(self, state: dict[str, Any] | None) -> None:
        self._state = state
        self.process = type("Process", (), {"pid": os.getpid()})()

    def state(self) -> dict[str, Any]:
        return self._state or {}


def test_the_service_processes_are_listed_to_tell_a_replaced_worker() -> None:
    assert os.getpid() in soak_run.process_ids(Stub(None))  # type: ignore[arg-type]
    assert soak_run.process_ids(object()) == []  # type: ignore[arg-type]


def test_a_container_the_engine_no_longer_knows_is_a_soak_not_made() -> None:
    running = {"Status": "running", "Running": True, "OOMKilled": False, "Pid": 7}
    state = soak_run.container_state(Stub(running))  # type: ignore[arg-type]
    assert state is not None and state["Running"] is True and "Pid" not in state
    assert soak_run.container_state(object()) is None  # type: ignore[arg-type]
    with pytest.raises(RunNotMade, match="no longer answers"):
        soak_run.container_state(Stub({}))  # type: ignore[arg-type]


# --- presets --------------------------------------------------------------------------------


def test_default_preset_takes_about_ten_minutes_and_short_under_three() -> None:
    assert 480 <= SOAK_PRESETS["default"].expected_seconds <= 600
    assert SOAK_PRESETS["short"].expected_seconds < 180


def test_a_soak_of_one_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="drift needs 2"):
        SoakPreset("one", SOAK_PRESETS["short"].cycle, cycles=1, summary="")


# --- the command line, the report, and the hook into the verifier's modes -------------------------


def test_from_timeline_judges_a_recording_again_with_other_criteria(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["soak", "--from-timeline", str(RECORDED)]) == EXIT_PASS
    text = capsys.readouterr().out
    assert "verdict: PASS" in text
    assert len([line for line in text.splitlines() if line.lstrip()[:2] in ("1 ", "2 ", "3 ")]) == 3
    crept = made_up(CREEPING)
    write_json(tmp_path / "crept.json", crept)
    assert cli.main(["soak", "--from-timeline", str(tmp_path / "crept.json")]) == EXIT_FAIL
    assert "idle memory crept" in capsys.readouterr().out
    loose = ["--max-drift-mb", "50", "--from-timeline", str(tmp_path / "crept.json")]
    assert cli.main(["soak", *loose]) == EXIT_PASS


def test_an_unreadable_timeline_is_a_soak_not_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"format": 1, "phases": [], "samples": []}))
    assert cli.main(["soak", "--from-timeline", str(tmp_path / "bad.json")]) == EXIT_NOT_MADE
    assert "not made" in capsys.readouterr().err


def test_the_soak_reads_its_flags_into_typed_options() -> None:
    argv = ["soak", "--cycles", "3", "--max-drift-mb", "40", "--set", "A=1", "--limit-mb", "400"]
    args = cli.build_parser().parse_args(argv)
    args.argv = argv
    options = soak.COMMAND.parse(args)
    assert options.cycles == 3 and options.service.overrides() == {"A": "1"}
    assert options.verdict.metric is None and options.metric == "cgroup"  # the container's
    criteria = options.criteria()
    assert (criteria.limit_mb, criteria.drift.max_mb) == (400.0, 40.0)
    assert options.argv == tuple(argv)


def test_context_opens_with_no_command_line_when_options_are_built_by_hand() -> None:
    options = soak.SoakOptions(
        flags.ServiceOptions(2, "docker"), flags.VerdictOptions(500.0, "pss", 0.0),
        flags.OutputOptions(None),
    )  # fmt: skip
    preset = SOAK_PRESETS["short"]
    lines = soak.context_lines(options, preset, "jemalloc", datetime(2024, 1, 2).astimezone())
    assert lines[0].startswith("profile jemalloc, 2 worker(s), limit mode docker")
    assert lines[2].startswith("metric pss")


@pytest.mark.parametrize(
    "argv",
    [["--cycles", "1"], ["--limit-mode", "none"], ["--set", "lower=1"], ["--web-concurrency", "0"]],
)
def test_arguments_that_cannot_make_a_soak_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["soak", *argv])
    assert exited.value.code == 2


def test_outputs_hold_a_row_per_cycle_and_a_plot(tmp_path: Path) -> None:
    timeline = made_up(CREEPING)
    outcome = outcome_of(timeline)
    soak.write_outputs(timeline, outcome, tmp_path, ["made up"], want_plot=True)
    with (tmp_path / "cycles.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["cycle"], r["idle_mb"], r["failures"]) for r in rows] == [
        ("1", "90.0", "0"),
        ("2", "105.0", "0"),
        ("3", "120.0", "0"),
        ("4", "135.0", "0"),
    ]
    assert read_json(tmp_path / "timeline.json").extra["soak"]["verdict"]["passed"] is False
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("\n| ") == 5 and "verdict: FAIL" in summary
    if soak_report.plot.plotting_available():
        assert (tmp_path / "memory.png").read_bytes()[:4] == b"\x89PNG"


def test_docker_mode_hands_workers_and_the_executor_to_the_container(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def run_docker(profile, settings, progress, overrides, executor):  # type: ignore[no-untyped-def]
        seen.update(overrides=overrides, executor=executor)
        return "ran"

    monkeypatch.setattr(modes, "run_docker", run_docker)
    marker = object()
    settings = RunSettings("x", SOAK_PRESETS["short"].cycle, Criteria(), "cgroup", tmp_path)
    result = modes.run_local(
        "jemalloc",
        settings,
        "docker",
        web_concurrency=2,
        overrides={"MEMORY_CLEANUP_THRESHOLD_MB": "50"},
        executor=marker,  # type: ignore[arg-type]
    )
    assert result == "ran"
    assert seen["overrides"] == {"WEB_CONCURRENCY": "2", "MEMORY_CLEANUP_THRESHOLD_MB": "50"}
    assert seen["executor"] is marker
