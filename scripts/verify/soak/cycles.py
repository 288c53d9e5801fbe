"""A soak's cycles on its timeline, and the figures of each.

A soak timeline holds the verifier's four phases (baseline, ramp, hold, idle) once per cycle, end
to end on one clock. Each cycle is judged with the verifier's own figures (verdict.compute): its
start is the median of its few seconds at rest, its idle figure the median of the end of its idle
window. The cycles are told apart by position, four phases each, so the phase names, colours and
CSV column stay the verifier's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from scripts.verify.core import phases as ph
from scripts.verify.core.loadrun import LoadStats
from scripts.verify.core.sampling import Sample
from scripts.verify.core.timeline import Timeline
from scripts.verify.core.verdict import Figures, NotEnoughSamples, compute

PHASES_PER_CYCLE = len(ph.ORDER)
# Marks of successive runs on one clock are taken microseconds apart; a gap this small is none.
JOIN_TOLERANCE_SECONDS = 1.0


@dataclass(frozen=True)
class Cycle:
    """One cycle's figures. ``figures`` is the judged metric; None when the cycle has no samples
    to judge (the service died in it)."""

    index: int  # 1-based
    start: float
    end: float
    figures: Figures | None
    pss: Figures | None
    load: LoadStats | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "figures": self.figures.as_dict() if self.figures else None,
            "pss": self.pss.as_dict() if self.pss else None,
            "load": self.load.as_dict() if self.load else None,
        }


def split(phases: Sequence[ph.Phase]) -> list[list[ph.Phase]]:
    """The phases cut into cycles of four; PhaseError unless each cycle is baseline, ramp, hold,
    idle end to end, and each starts where the one before it ended."""
    if not phases or len(phases) % PHASES_PER_CYCLE:
        raise ph.PhaseError(f"{len(phases)} phases do not make cycles of {PHASES_PER_CYCLE}")
    cycles = [
        list(phases[i : i + PHASES_PER_CYCLE]) for i in range(0, len(phases), PHASES_PER_CYCLE)
    ]
    for number, cycle in enumerate(cycles, 1):
        try:
            ph.validate(cycle)
        except ph.PhaseError as exc:
            raise ph.PhaseError(f"cycle {number}: {exc}") from None
    for number, (before, after) in enumerate(zip(cycles, cycles[1:], strict=False), 2):
        gap = after[0].start - before[-1].end
        if not 0 <= gap <= JOIN_TOLERANCE_SECONDS:
            raise ph.PhaseError(
                f"cycle {number} starts {gap:+.3f} s from the end of cycle {number - 1}"
            )
    return cycles


def shift_phases(phases: Sequence[ph.Phase], offset: float) -> list[ph.Phase]:
    """Phases of one run moved onto the soak's clock."""
    return [ph.Phase(p.name, round(p.start + offset, 3), round(p.end + offset, 3)) for p in phases]


def shift_samples(samples: Sequence[Sample], offset: float) -> list[Sample]:
    """Samples of one run moved onto the soak's clock."""
    return [replace(s, t=round(s.t + offset, 3)) for s in samples]


def _figures(
    samples: Sequence[Sample], phases: Sequence[ph.Phase], metric: str, tail: float
) -> Figures | None:
    try:
        return compute(samples, phases, metric, tail)
    except NotEnoughSamples:
        return None


def cycles_of(
    timeline: Timeline,
    metric: str,
    idle_tail_seconds: float,
    loads: Sequence[LoadStats | None] = (),
) -> list[Cycle]:
    """Each cycle's figures on ``metric`` (and on PSS, reported beside it), with its Locust
    figures where ``loads`` has them."""
    cycles = []
    for number, phases in enumerate(split(timeline.phases), 1):
        # Only this cycle's samples: a cycle without any at rest must not borrow another's.
        samples = ph.between(timeline.samples, phases[0].start, phases[-1].end)
        cycles.append(
            Cycle(
                index=number,
                start=phases[0].start,
                end=phases[-1].end,
                figures=_figures(samples, phases, metric, idle_tail_seconds),
                pss=_figures(samples, phases, "pss", idle_tail_seconds),
                load=loads[number - 1] if number <= len(loads) else None,
            )
        )
    return cycles


def loads_of(timeline: Timeline) -> list[LoadStats | None]:
    """Each cycle's Locust figures as the soak recorded them in the timeline."""
    return [LoadStats.from_dict(raw) if raw else None for raw in timeline.extra.get("loads", [])]


def total_load(loads: Sequence[LoadStats | None]) -> LoadStats | None:
    """The cycles' Locust figures together: counts summed, requests per second over all cycles'
    load time, and the worst cycle's p50 and p99 (percentiles cannot be summed)."""
    known = [load for load in loads if load is not None]
    if not known:
        return None
    requests = sum(load.requests for load in known)
    load_seconds = sum(
        load.requests / load.requests_per_second for load in known if load.requests_per_second
    )
    p50 = [load.p50_ms for load in known if load.p50_ms is not None]
    p99 = [load.p99_ms for load in known if load.p99_ms is not None]
    return LoadStats(
        requests=requests,
        failures=sum(load.failures for load in known),
        requests_per_second=requests / load_seconds if load_seconds else 0.0,
        p50_ms=max(p50) if p50 else None,
        p99_ms=max(p99) if p99 else None,
        bulk_submits=sum(load.bulk_submits for load in known),
        bulk_failures=sum(load.bulk_failures for load in known),
    )
