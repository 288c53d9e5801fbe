"""The spike-then-idle plan as a pure function of run time, with no Locust import.

Importing Locust monkey-patches the whole interpreter (gevent), so the plan lives apart from the
LoadTestShape: the verifier and the tests read it without patching their own process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

# Users leave at this rate when the hold ends: at once, so the spike has a sharp edge (Locust
# warns about rates above 100 per second).
DROP_RATE = 100.0

# Environment names of the plan's fields; Locust's custom arguments read the same names.
ENV_NAMES = {
    "users": "SPIKE_USERS",
    "spawn_rate": "SPIKE_SPAWN_RATE",
    "ramp_seconds": "SPIKE_RAMP_SECONDS",
    "hold_seconds": "SPIKE_HOLD_SECONDS",
    "idle_seconds": "SPIKE_IDLE_SECONDS",
}
INTEGER_FIELDS = ("users",)


class PlanError(ValueError):
    """A plan value that cannot make a spike; the message names the setting."""


@dataclass(frozen=True)
class SpikePlan:
    """Ramp to ``users``, hold, drop to zero, stay idle; the defaults are the standard spike.

    ``spawn_rate`` 0 means "reach ``users`` exactly at the end of the ramp". A soak repeats the
    plan as separate Locust runs (scripts/verify/soak), each with its own statistics.
    """

    users: int = 20
    spawn_rate: float = 0.0
    ramp_seconds: float = 20.0
    hold_seconds: float = 100.0
    idle_seconds: float = 150.0

    def __post_init__(self) -> None:
        if self.users < 1:
            raise PlanError(f"users={self.users}: need at least one user")
        if self.spawn_rate < 0:
            raise PlanError(f"spawn_rate={self.spawn_rate}: must be >= 0 (0 = users / ramp)")
        for name in ("ramp_seconds", "hold_seconds", "idle_seconds"):
            value = getattr(self, name)
            if value < 0 or math.isnan(value):
                raise PlanError(f"{name}={value}: must be >= 0")
        if self.ramp_seconds + self.hold_seconds <= 0:
            raise PlanError("ramp_seconds + hold_seconds must be > 0: there would be no load")

    @property
    def effective_spawn_rate(self) -> float:
        """Users started per second: the explicit rate, else the one that fills the ramp."""
        if self.spawn_rate > 0:
            return self.spawn_rate
        if self.ramp_seconds > 0:
            return self.users / self.ramp_seconds
        return float(self.users)

    @property
    def load_seconds(self) -> float:
        """Seconds with users running: the ramp and the hold."""
        return self.ramp_seconds + self.hold_seconds

    @property
    def total_seconds(self) -> float:
        """The spike and the idle window after it."""
        return self.load_seconds + self.idle_seconds

    def with_overrides(self, **changes: float | int | None) -> SpikePlan:
        """A copy with the given fields replaced; None leaves a field as it is."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v for k, v in changes.items() if v is not None})
        return SpikePlan(**values)


def target_at(plan: SpikePlan, run_seconds: float) -> tuple[int, float] | None:
    """(users, spawn rate) Locust should aim for at ``run_seconds``; None once the plan is over.

    During the ramp and the hold the target is the full user count (Locust ramps at the spawn
    rate itself); from the end of the hold it is zero users, until the idle window has passed.
    """
    if run_seconds >= plan.total_seconds:
        return None
    if run_seconds < plan.load_seconds:
        return plan.users, plan.effective_spawn_rate
    return 0, DROP_RATE


def plan_from_env(
    environ: Mapping[str, str] | None = None, base: SpikePlan | None = None
) -> SpikePlan:
    """The plan with any SPIKE_* variables applied over ``base`` (default: the standard spike)."""
    source = os.environ if environ is None else environ
    changes: dict[str, float | int] = {}
    for field_name, env_name in ENV_NAMES.items():
        raw = source.get(env_name, "").strip()
        if not raw:
            continue
        try:
            changes[field_name] = int(raw) if field_name in INTEGER_FIELDS else float(raw)
        except ValueError:
            raise PlanError(f"{env_name}={raw!r}: not a number") from None
    return (base or SpikePlan()).with_overrides(**changes)
