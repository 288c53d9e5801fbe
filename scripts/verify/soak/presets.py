"""The soak presets: the spike one cycle repeats, and how many cycles.

A cycle is a verification run's four phases in turn: a few seconds at rest ("baseline"), the
ramp, the hold, and the idle window after the users have dropped to zero. Each preset reuses the
verifier's Preset for one cycle, so the checks that make an idle window long enough (two cleanup
intervals; cached results expired and purged inside it) hold for every cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from loadtest.spike import SpikePlan
from scripts.verify.core.presets import PRESETS, Preset

# A drift between a first and a last cycle needs two cycles at least.
MIN_CYCLES = 2


@dataclass(frozen=True)
class SoakPreset:
    name: str
    cycle: Preset  # one cycle: its spike, idle window, rest before it, and service settings
    cycles: int
    summary: str

    def __post_init__(self) -> None:
        if self.cycles < MIN_CYCLES:
            raise ValueError(
                f"soak preset {self.name}: {self.cycles} cycle(s); a drift needs {MIN_CYCLES}"
            )

    @property
    def cycle_seconds(self) -> float:
        return self.cycle.baseline_seconds + self.cycle.plan.total_seconds

    @property
    def expected_seconds(self) -> float:
        """Roughly how long the cycles take; each Locust start adds a few seconds more."""
        return self.cycles * self.cycle_seconds

    def with_cycles(self, cycles: int | None) -> SoakPreset:
        return self if cycles is None else replace(self, cycles=cycles)


SOAK_PRESETS: dict[str, SoakPreset] = {
    # For tests and CI: the verifier's short spike three times, about 2.5 minutes.
    "short": SoakPreset(
        name="short",
        # No warm-up: a soak's cycles are told apart as four phases each, and its verdict is
        # the drift from the first cycle to the last, which a warm-up would not change.
        cycle=replace(PRESETS["short"], warmup_seconds=0),
        cycles=3,
        summary="the verifier's short spike (10 users, 25 s) and a 20 s idle window, 3 times",
    ),
    # The default, about 10 minutes: the standard spike's 20 users, four times. A 30 s cleanup
    # interval (the service's default is 60 s) lets an idle window of two intervals plus the
    # purge of expired results fit four cycles into 10 minutes; with 60 s it would be three.
    "default": SoakPreset(
        name="default",
        cycle=Preset(
            name="soak",
            plan=SpikePlan(users=20, ramp_seconds=10, hold_seconds=45, idle_seconds=75),
            cleanup_interval_seconds=30,
            cache_ttl_seconds=30,
        ),
        cycles=4,
        summary="20 users, 55 s of load and a 75 s idle window, 4 times",
    ),
}
