"""Figures and verdicts on recorded timelines (real short runs on a 2-core machine) and on small
made-up ones for the edges a real run rarely hits."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.memory.measure import MB
from scripts.verify.core import phases as ph
from scripts.verify.core.run import judge_timeline
from scripts.verify.core.sampling import Sample
from scripts.verify.core.timeline import Timeline, read_json, write_json
from scripts.verify.core.verdict import Criteria, NotEnoughSamples, compute, judge

FIXTURES = Path(__file__).parent / "fixtures"


def recorded(name: str) -> Timeline:
    return read_json(FIXTURES / f"timeline_{name}.json")


def criteria_of(timeline: Timeline) -> Criteria:
    return Criteria(
        limit_mb=float(timeline.meta["limit_mb"]),
        min_returned=float(timeline.meta["min_returned"]),
    )


def figures_of(timeline: Timeline, min_returned: float = 0.5):  # type: ignore[no-untyped-def]
    return compute(
        timeline.samples,
        timeline.phases,
        str(timeline.meta["metric"]),
        float(timeline.meta["idle_tail_seconds"]),
        min_returned,
    )


def test_recorded_run_that_gives_its_spike_back_passes() -> None:
    timeline = recorded("passes")
    figures = figures_of(timeline)
    verdict = judge(figures, criteria_of(timeline), failure_share=0.0)
    assert verdict.passed, verdict.reasons
    assert figures.start_bytes < figures.idle_bytes < figures.peak_bytes
    assert figures.returned is not None and figures.returned >= 0.5
    assert figures.seconds_to_return is not None
    assert 0 <= figures.seconds_to_return <= figures.idle_window_seconds


def test_recorded_run_that_keeps_its_spike_fails_on_the_return_share() -> None:
    timeline = recorded("stays_high")
    figures = figures_of(timeline)
    verdict = judge(figures, criteria_of(timeline), failure_share=0.0)
    assert not verdict.passed
    assert figures.returned is not None and figures.returned < 0.5
    assert any("returned" in reason for reason in verdict.reasons)
    assert not any("limit" in reason for reason in verdict.reasons)


def test_recorded_run_over_its_limit_fails_on_the_limit() -> None:
    timeline = recorded("over_limit")
    figures = figures_of(timeline)
    verdict = judge(figures, criteria_of(timeline), failure_share=0.0)
    assert not verdict.passed
    assert figures.idle_bytes / MB >= float(timeline.meta["limit_mb"])
    assert any("limit" in reason for reason in verdict.reasons)


def test_the_same_run_is_not_over_a_higher_limit_and_still_fails_for_what_it_kept() -> None:
    """Its idle (228 MB) is above what the load held (189 MB): memory went on growing after the
    load, which no limit excuses."""
    timeline = recorded("over_limit")
    figures = figures_of(timeline)
    generous = Criteria(limit_mb=figures.idle_bytes / MB * 2, min_returned=0.0)
    verdict = judge(figures, generous, failure_share=0.0)
    assert not any("limit" in reason for reason in verdict.reasons)
    assert figures.returned is not None and figures.returned < 0
    assert [r for r in verdict.reasons if r.startswith("returned -")], verdict.reasons


def test_too_many_failed_requests_fail_an_otherwise_good_run() -> None:
    timeline = recorded("passes")
    verdict = judge(figures_of(timeline), criteria_of(timeline), failure_share=0.2)
    assert not verdict.passed
    assert any("failed" in reason for reason in verdict.reasons)


# Made-up timelines: MB values at one-second samples over fixed phases.
PHASES = ph.run_phases(0.0, 3.0, ramp_seconds=2.0, load_end=10.0, idle_end=20.0)


def made_up(values_mb: list[float]) -> list[Sample]:
    return [Sample(t=float(t), pss_bytes=int(v * MB)) for t, v in enumerate(values_mb)]


BASE = [50, 50, 50]
LOAD = [100, 200, 300, 300, 300, 300, 300]


def test_median_figures_ignore_one_stray_sample() -> None:
    idle = [250, 150, 100, 80, 80, 80, 80, 80, 400, 80, 80]  # one spike inside the tail
    figures = compute(made_up([50, 900, 50, *LOAD, *idle]), PHASES, "pss", idle_tail_seconds=5)
    assert figures.start_bytes == 50 * MB
    assert figures.idle_bytes == 80 * MB
    assert figures.peak_bytes == 400 * MB  # the highest sample is reported ...
    assert figures.load_level_bytes == 300 * MB  # ... but the return is of the hold's level
    assert figures.returned == pytest.approx((300 - 80) / (300 - 50))


def test_time_to_return_counts_from_the_end_of_the_load() -> None:
    idle = [300, 290, 250, 170, 120, 100, 100, 100, 100, 100, 100]
    figures = compute(made_up([*BASE, *LOAD, *idle]), PHASES, "pss", idle_tail_seconds=5)
    # Half of the 250 MB spike is back at 175 MB: first reached at t=13, 3 s after the load.
    assert figures.seconds_to_return == 3.0
    assert figures.peak_t in {float(t) for t in range(5, 11)}


def test_time_to_target_counts_until_memory_stays_within_it() -> None:
    # Start 50 MB, so the target is 75 MB: first under it at t=13, back over at t=14, then under
    # for good from t=15, 5 s after the load ended at t=10.
    idle = [300, 200, 120, 70, 90, 74, 70, 70, 70, 70, 70]
    figures = compute(made_up([*BASE, *LOAD, *idle]), PHASES, "pss", idle_tail_seconds=5)
    assert figures.seconds_to_target == 5.0
    assert figures.idle_ratio == pytest.approx(70 / 50)


def test_memory_that_never_settles_within_the_target_has_no_time_to_target() -> None:
    idle = [300, 200, 120, 70, 70, 70, 70, 70, 70, 70, 80]
    figures = compute(made_up([*BASE, *LOAD, *idle]), PHASES, "pss", idle_tail_seconds=5)
    assert figures.seconds_to_target is None


def test_a_spike_too_small_to_judge_passes_with_a_note() -> None:
    flat = [50.0] * 21
    figures = compute(made_up(flat[:5] + [60.0] + flat[6:]), PHASES, "pss", idle_tail_seconds=5)
    verdict = judge(figures, Criteria(), failure_share=0.0)
    assert figures.returned is None
    assert verdict.passed and verdict.notes


def test_no_samples_in_the_idle_tail_cannot_be_judged() -> None:
    with pytest.raises(NotEnoughSamples):
        compute(made_up([*BASE, *LOAD]), PHASES, "pss", idle_tail_seconds=5)


def test_a_missing_metric_cannot_be_judged() -> None:
    with pytest.raises(NotEnoughSamples):
        compute(made_up([*BASE, *LOAD, *[80] * 11]), PHASES, "uss", idle_tail_seconds=5)


# Timelines as a run records them (a warm-up, then the four phases; the kernel's marks), written
# and read back, then judged as `verify run --from-timeline` judges them.
WARM_PHASES = ph.run_phases(5.0, 10.0, 2.0, 40.0, 70.0, warmup_start=0.0)


def written(
    tmp_path: Path, values_mb: list[float], kernel_peak_mb: float | None = None
) -> Timeline:
    samples = [Sample(t=float(t), pss_bytes=int(v * MB)) for t, v in enumerate(values_mb)]
    peaks = {}
    if kernel_peak_mb is not None:
        peaks = {ph.LOAD: {"rss_bytes": int(kernel_peak_mb * MB), "since_reset": True}}
    timeline = Timeline(
        meta={"metric": "pss", "limit_mb": 500.0, "min_returned": 0.5, "idle_tail_seconds": 10},
        phases=WARM_PHASES,
        samples=samples,
        extra={"kernel_peaks": peaks},
    )
    path = write_json(tmp_path / "timeline.json", timeline)
    return read_json(path)


def judged(timeline: Timeline):  # type: ignore[no-untyped-def]
    (result,) = judge_timeline(timeline, criteria_of(timeline), "pss", 10.0, None)
    return result


def test_a_service_that_keeps_what_it_is_sent_fails_though_a_block_came_and_went(
    tmp_path: Path,
) -> None:
    """It keeps every MB it is sent (80 MB by the end of the load) and once holds a 200 MB block
    for a second. Measured from the highest sample, that block made 71% of a 280 MB "spike"
    look given back; measured from what the load held, nothing was."""
    warmup, baseline = [100.0] * 5, [100.0] * 5
    load = [100 + 80 * i / 29 for i in range(30)]
    load[20] += 200  # the block, one sample long
    idle = [180.0] * 31
    result = judged(written(tmp_path, [*warmup, *baseline, *load, *idle], kernel_peak_mb=390))
    figures = result.figures
    assert figures.peak_bytes >= 300 * MB  # the block is seen, and reported
    assert figures.rss_peak_bytes == 390 * MB and figures.cgroup_peak_bytes is None
    assert not result.verdict.passed
    assert figures.returned is not None and figures.returned < 0.5, figures.returned
    assert any(r.startswith("returned") for r in result.verdict.reasons), result.verdict.reasons


def test_a_service_that_grows_while_warming_up_and_returns_its_spike_passes(
    tmp_path: Path,
) -> None:
    """20 MB made during the warm-up (a pool, first-request caches) is part of the start."""
    warmup = [100, 105, 110, 115, 120]
    baseline = [120.0] * 5
    load = [200.0] * 30
    idle = [160, 140, *([121.0] * 29)]
    result = judged(written(tmp_path, [*warmup, *baseline, *load, *idle]))
    assert result.verdict.passed, result.verdict.reasons
    assert result.figures.start_bytes == 120 * MB
    assert result.figures.returned == pytest.approx((200 - 121) / (200 - 120))
    assert any("kernel's peak was not read" in n for n in result.verdict.notes)


def test_a_small_load_may_not_leave_more_than_the_minimum_spike(tmp_path: Path) -> None:
    """Too little rise under load to judge a share of, yet 30 MB more at rest afterwards."""
    values = [100.0] * 10 + [105.0] * 30 + [130.0] * 31
    result = judged(written(tmp_path, values))
    assert result.figures.returned is None
    assert not result.verdict.passed
    assert any("over the start" in r for r in result.verdict.reasons), result.verdict.reasons


def test_a_kernel_peak_near_the_limit_is_said(tmp_path: Path) -> None:
    values = [100.0] * 10 + [300.0] * 30 + [110.0] * 31
    result = judged(written(tmp_path, values, kernel_peak_mb=470))
    assert result.verdict.passed
    assert any("within 10% of the 500 MB limit" in n for n in result.verdict.notes)


def test_memory_that_never_went_over_the_target_has_no_time_to_target() -> None:
    # Start 50 MB, target 75 MB: the load never took it there, so there was nothing to return
    # from, and a 0 would say it came back at once.
    calm = [60, 62, 65, 70, 68, 66, 64, 62, 60, 60, 60]
    figures = compute(made_up([*BASE, 70, 72, 74, 74, 72, 70, 70, *calm]), PHASES, "pss", 5)
    assert figures.seconds_to_target is None
