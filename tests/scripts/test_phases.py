"""Phase bookkeeping: marks become four phases end to end; samples are placed in them."""

from __future__ import annotations

import pytest

from scripts.verify.core import phases as ph
from scripts.verify.core.sampling import Sample


def test_marks_become_four_phases_end_to_end() -> None:
    phases = ph.run_phases(0.0, 3.0, ramp_seconds=4.0, load_end=30.0, idle_end=50.0)
    assert [(p.name, p.start, p.end) for p in phases] == [
        ("baseline", 0.0, 3.0),
        ("ramp", 3.0, 7.0),
        ("hold", 7.0, 30.0),
        ("idle", 30.0, 50.0),
    ]
    ph.validate(phases)
    assert ph.load_window(phases) == (3.0, 30.0)


def test_load_cut_short_leaves_an_empty_hold_not_a_ramp_past_the_load() -> None:
    phases = ph.run_phases(0.0, 3.0, ramp_seconds=10.0, load_end=5.0, idle_end=6.0)
    assert ph.find(phases, "ramp").end == 5.0
    assert ph.find(phases, "hold").seconds == 0.0


def test_marks_out_of_order_are_refused() -> None:
    with pytest.raises(ph.PhaseError):
        ph.run_phases(0.0, 10.0, 1.0, load_end=5.0, idle_end=20.0)


def test_missing_or_reordered_phases_do_not_validate() -> None:
    phases = ph.run_phases(0.0, 1.0, 1.0, 5.0, 9.0)
    with pytest.raises(ph.PhaseError):
        ph.validate(phases[:3])
    with pytest.raises(ph.PhaseError):
        ph.validate([phases[0], phases[2], phases[1], phases[3]])
    gap = [*phases[:3], ph.Phase("idle", 6.0, 9.0)]
    with pytest.raises(ph.PhaseError):
        ph.validate(gap)


def test_each_moment_falls_in_one_phase_and_the_end_belongs_to_idle() -> None:
    phases = ph.run_phases(0.0, 3.0, 4.0, 30.0, 50.0)
    assert ph.phase_at(phases, 0.0) == "baseline"
    assert ph.phase_at(phases, 3.0) == "ramp"
    assert ph.phase_at(phases, 29.99) == "hold"
    assert ph.phase_at(phases, 50.0) == "idle"
    assert ph.phase_at(phases, 50.1) is None


def test_samples_between_include_both_ends() -> None:
    samples = [Sample(t=float(t), rss_bytes=t) for t in range(10)]
    assert [s.t for s in ph.between(samples, 2.0, 4.0)] == [2.0, 3.0, 4.0]
