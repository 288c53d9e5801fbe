"""The verification presets: the one place their load, timing and service settings are defined."""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.spike import SpikePlan


@dataclass(frozen=True)
class Preset:
    """A spike, how long to watch the silence after it, and the cleanup cadence to run with.

    What the users send is theirs: a workload declares the options its users take in a spike
    and in the warm-up (app/load.py), so a preset says how long and how many, never what.

    ``plan.idle_seconds`` is the idle window the verifier waits after Locust has stopped; it must
    cover two cleanup intervals, so a release that is due is seen at least once whatever the
    phase of the cleanup timer when the load ends.
    """

    name: str
    plan: SpikePlan
    cleanup_interval_seconds: float  # MEMORY_CLEANUP_INTERVAL for the server the verifier starts
    # CACHE_TTL_SECONDS for that server: results cached during the spike expire inside the idle
    # window, so what stays afterwards is what the allocator kept, not data still promised.
    cache_ttl_seconds: float
    baseline_seconds: float = 5.0  # sampled before the load; their median is "start"
    # One user of the scenario before the baseline (0: none), so the start is a warm service's.
    warmup_seconds: float = 0.0
    idle_tail_seconds: float = 10.0  # the end of the idle window; its median is "idle"
    health_timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.plan.idle_seconds < 2 * self.cleanup_interval_seconds:
            raise ValueError(
                f"preset {self.name}: idle window {self.plan.idle_seconds:g} s is shorter than two "
                f"cleanup intervals ({self.cleanup_interval_seconds:g} s each)"
            )
        if self.cache_ttl_seconds + self.cleanup_interval_seconds >= self.plan.idle_seconds:
            raise ValueError(
                f"preset {self.name}: cached results ({self.cache_ttl_seconds:g} s) must expire "
                "and be purged by a cleanup inside the idle window"
            )
        if not 0 < self.idle_tail_seconds <= self.plan.idle_seconds:
            raise ValueError(f"preset {self.name}: idle tail must lie inside the idle window")

    @property
    def expected_seconds(self) -> float:
        """Roughly how long one run takes, start-up and Locust's own start aside."""
        return self.warmup_seconds + self.baseline_seconds + self.plan.total_seconds


PRESETS: dict[str, Preset] = {
    # For tests and CI: under a minute per profile on two shared cores, and still a spike of
    # hundreds of MB, because a few users send the 20,000-record bodies.
    "short": Preset(
        name="short",
        plan=SpikePlan(users=10, ramp_seconds=3, hold_seconds=22, idle_seconds=20),
        cleanup_interval_seconds=5,
        cache_ttl_seconds=10,
        baseline_seconds=3,
        idle_tail_seconds=5,
        warmup_seconds=5,
    ),
    # For the README's figures: the standard spike, and the service's own 60 s cleanup interval.
    "standard": Preset(
        name="standard",
        plan=SpikePlan(),
        cleanup_interval_seconds=60,
        cache_ttl_seconds=60,
        warmup_seconds=15,
    ),
}
