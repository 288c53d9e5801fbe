"""The LoadTestShape that drives the spike: ramp, hold, drop to zero users, idle, stop.

A thin adapter: the plan and its arithmetic are in loadtest.spike, so they are testable and
readable without Locust. The plan comes from the --spike-* arguments (or SPIKE_* variables),
registered by loadtest.locustfile.
"""

from __future__ import annotations

from argparse import Namespace

from locust import LoadTestShape

from loadtest.spike import SpikePlan, plan_from_env, target_at


def plan_from_options(options: Namespace | None) -> SpikePlan:
    """The plan from Locust's parsed options; an option left unset keeps the SPIKE_* value."""
    base = plan_from_env()
    if options is None:
        return base
    return base.with_overrides(
        users=getattr(options, "spike_users", None),
        spawn_rate=getattr(options, "spike_spawn_rate", None),
        ramp_seconds=getattr(options, "spike_ramp", None),
        hold_seconds=getattr(options, "spike_hold", None),
        idle_seconds=getattr(options, "spike_idle", None),
    )


class SpikeShape(LoadTestShape):
    """Spike then idle; Locust quits once the idle window has passed (in headless mode)."""

    _plan: SpikePlan | None = None

    @property
    def plan(self) -> SpikePlan:
        if self._plan is None:
            options = self.runner.environment.parsed_options if self.runner else None
            self._plan = plan_from_options(options)
        return self._plan

    def tick(self) -> tuple[int, float] | None:
        return target_at(self.plan, self.get_run_time())
