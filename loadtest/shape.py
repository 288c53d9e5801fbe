"""The LoadTestShape that drives the spike: ramp, hold, drop to zero users, idle, stop.

A thin adapter: the plan and its arithmetic are in loadtest.spike, so they are testable and
readable without Locust. The plan comes from the --spike-* arguments (or SPIKE_* variables),
registered by loadtest.locustfile; --spike-cycles (repeat the spike and its idle window, a soak)
is registered here.
"""

from __future__ import annotations

from argparse import Namespace

from locust import LoadTestShape, events

from loadtest.spike import ENV_NAMES, SpikePlan, plan_from_env, target_at


@events.init_command_line_parser.add_listener
def _add_cycles_argument(parser) -> None:  # type: ignore[no-untyped-def]
    parser.add_argument(
        "--spike-cycles",
        type=int,
        env_var=ENV_NAMES["cycles"],
        default=None,
        help="repeat the spike and its idle window this many times (default 1)",
    )


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
        cycles=getattr(options, "spike_cycles", None),
    )


class SpikeShape(LoadTestShape):
    """Spike then idle (``cycles`` times); Locust quits once the last idle window has passed
    (in headless mode)."""

    _plan: SpikePlan | None = None

    @property
    def plan(self) -> SpikePlan:
        if self._plan is None:
            options = self.runner.environment.parsed_options if self.runner else None
            self._plan = plan_from_options(options)
        return self._plan

    def tick(self) -> tuple[int, float] | None:
        return target_at(self.plan, self.get_run_time())
