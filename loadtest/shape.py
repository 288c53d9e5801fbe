"""The LoadTestShape that drives the spike: ramp, hold, drop to zero users, idle, stop.

A thin adapter: the plan and its arithmetic are in loadtest.spike, so they are testable and
readable without Locust. The plan comes from the --spike-* arguments (or SPIKE_* variables),
registered here, so this file is a locustfile of its own: any users run under the spike as

    locust -f your_locustfile.py,loadtest/shape.py --headless --host URL --spike-users 20

which is how `python -m scripts.verify run --locustfile FILE` runs a user's own scenario.
"""

from __future__ import annotations

from argparse import Namespace

from locust import LoadTestShape, events

from loadtest.spike import ENV_NAMES, SpikePlan, plan_from_env, target_at


@events.init_command_line_parser.add_listener
def _add_spike_arguments(parser) -> None:  # type: ignore[no-untyped-def]
    standard = SpikePlan()
    group = parser.add_argument_group("spike", "spike-then-idle shape (loadtest.spike)")
    group.add_argument(
        "--spike-users",
        type=int,
        env_var=ENV_NAMES["users"],
        default=None,
        help=f"users at the top of the spike (default {standard.users})",
    )
    group.add_argument(
        "--spike-spawn-rate",
        type=float,
        env_var=ENV_NAMES["spawn_rate"],
        default=None,
        help="users started per second (default: users / ramp)",
    )
    group.add_argument(
        "--spike-ramp",
        type=float,
        env_var=ENV_NAMES["ramp_seconds"],
        default=None,
        help=f"seconds to reach the top (default {standard.ramp_seconds:g})",
    )
    group.add_argument(
        "--spike-hold",
        type=float,
        env_var=ENV_NAMES["hold_seconds"],
        default=None,
        help=f"seconds at the top (default {standard.hold_seconds:g})",
    )
    group.add_argument(
        "--spike-idle",
        type=float,
        env_var=ENV_NAMES["idle_seconds"],
        default=None,
        help=f"seconds with zero users before Locust stops (default {standard.idle_seconds:g})",
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
