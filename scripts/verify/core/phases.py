"""The phases of a run on its clock: warm-up (where the preset has one), baseline, ramp, hold, idle.

Marks are taken when the verifier starts and sees the end of each stage, so the phases are what
happened, not what was planned; the ramp/hold split is the plan's ramp measured from Locust's
start (Locust does not report when its ramp ends). The warm-up is one user of the scenario
before the baseline, so that the start is measured on a service that has made its pools and
first-request caches; a run recorded before it existed has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from scripts.verify.core.sampling import Sample

WARMUP, BASELINE, RAMP, HOLD, IDLE = "warmup", "baseline", "ramp", "hold", "idle"
LOAD_PHASES = (RAMP, HOLD)
ORDER = (BASELINE, RAMP, HOLD, IDLE)
LOAD = "load"  # the ramp and the hold together, as the kernel's marks cover them


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
    baseline_start: float,
    load_start: float,
    ramp_seconds: float,
    load_end: float,
    idle_end: float,
    warmup_start: float | None = None,
) -> list[Phase]:
    """The phases from the marks the verifier took: four, or five with a warm-up."""
    first = baseline_start if warmup_start is None else warmup_start
    if not first <= baseline_start <= load_start <= load_end <= idle_end:
        raise PhaseError(
            f"marks out of order: {first}, {baseline_start}, {load_start}, {load_end}, {idle_end}"
        )
    ramp_end = min(load_start + ramp_seconds, load_end)
    warmup = [] if warmup_start is None else [Phase(WARMUP, warmup_start, baseline_start)]
    return [
        *warmup,
        Phase(BASELINE, baseline_start, load_start),
        Phase(RAMP, load_start, ramp_end),
        Phase(HOLD, ramp_end, load_end),
        Phase(IDLE, load_end, idle_end),
    ]


def validate(phases: Sequence[Phase]) -> None:
    """Each phase once, in order, end to end (a warm-up first, or none); raises PhaseError
    otherwise."""
    names = [p.name for p in phases]
    if names not in (list(ORDER), [WARMUP, *ORDER]):
        raise PhaseError(f"phases {names}, expected {list(ORDER)}, after a {WARMUP} or not")
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
