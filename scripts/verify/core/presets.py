"""The verification presets: the one place their load, timing and service settings are defined."""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.spike import SpikePlan

# A spike is heavier than everyday traffic (loadtest's defaults): shorter think time and more of
# the largest bodies, still mostly small ones.
SPIKE_THINK = "0.1,0.5"
SPIKE_SIZES = "200:40,1000:25,5000:20,20000:15"
# The warm-up sends our scenario's smallest bodies only (a user's scenario runs as it is).
WARMUP_SIZES = "200:1"


@dataclass(frozen=True)
class Preset:
    """A spike, how long to watch the silence after it, and the cleanup cadence to run with.

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
    think_time: str = SPIKE_THINK  # Locust --think-time: min,max seconds between requests
    bulk_sizes: str = SPIKE_SIZES  # Locust --bulk-sizes: records:weight,...
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
