"""The phases of a run on its clock: baseline, ramp, hold, idle.

Marks are taken when the verifier starts and sees the end of each stage, so the phases are what
happened, not what was planned; the ramp/hold split is the plan's ramp measured from Locust's
start (Locust does not report when its ramp ends).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from scripts.verify.core.sampling import Sample

BASELINE, RAMP, HOLD, IDLE = "baseline", "ramp", "hold", "idle"
LOAD_PHASES = (RAMP, HOLD)
ORDER = (BASELINE, RAMP, HOLD, IDLE)


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 0.0)

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class PhaseError(ValueError):
    """Phases that cannot describe a run (missing, overlapping or out of order)."""


def run_phases(
    baseline_start: float, load_start: float, ramp_seconds: float, load_end: float, idle_end: float
) -> list[Phase]:
    """The four phases from the marks the verifier took."""
    if not baseline_start <= load_start <= load_end <= idle_end:
        raise PhaseError(
            f"marks out of order: {baseline_start}, {load_start}, {load_end}, {idle_end}"
        )
    ramp_end = min(load_start + ramp_seconds, load_end)
    return [
        Phase(BASELINE, baseline_start, load_start),
        Phase(RAMP, load_start, ramp_end),
        Phase(HOLD, ramp_end, load_end),
        Phase(IDLE, load_end, idle_end),
    ]


def validate(phases: Sequence[Phase]) -> None:
    """Each phase once, in order, end to end; raises PhaseError otherwise."""
    names = [p.name for p in phases]
    if names != list(ORDER):
        raise PhaseError(f"phases {names}, expected {list(ORDER)}")
    for before, after in zip(phases, phases[1:], strict=False):
        if abs(before.end - after.start) > 1e-6 or before.start > before.end:
            raise PhaseError(f"phase {after.name} does not follow {before.name}")


def find(phases: Iterable[Phase], name: str) -> Phase:
    for phase in phases:
        if phase.name == name:
            return phase
    raise PhaseError(f"no {name} phase")


def load_window(phases: Sequence[Phase]) -> tuple[float, float]:
    """(start, end) of the load: the ramp and the hold together."""
    return find(phases, RAMP).start, find(phases, HOLD).end


def phase_at(phases: Iterable[Phase], t: float) -> str | None:
    """The name of the phase ``t`` falls in; the last phase includes its end."""
    last: Phase | None = None
    for phase in phases:
        if phase.contains(t):
            return phase.name
        last = phase
    if last is not None and t == last.end:
        return last.name
    return None


def between(samples: Iterable[Sample], start: float, end: float) -> list[Sample]:
    """Samples with start <= t <= end."""
    return [s for s in samples if start <= s.t <= end]
