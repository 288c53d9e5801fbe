"""The LoadTestShape that drives the spike: ramp, hold, drop to zero users, idle, stop.

A thin adapter: the plan and its arithmetic are in loadtest.spike, so they are testable and
readable without Locust. The plan comes from the --spike-* arguments (or SPIKE_* variables),
registered here, so this file is a locustfile of its own: any users run under the spike as

    locust -f your_locustfile.py,loadtest/shape.py --headless --host URL --spike-users 20

which is how `python -m scripts.verify run --locustfile FILE` runs a user's own scenario.
"""

from __future__ import annotations

from typing import Protocol

from locust import LoadTestShape, events
from locust.argument_parser import LocustArgumentParser

from loadtest.spike import ENV_NAMES, SpikePlan, plan_from_env, target_at

_STANDARD = SpikePlan()
# (flag, plan field, type, help): the spike's options, each also read from its SPIKE_* variable.
SPIKE_OPTIONS = (
    ("--spike-users", "users", int, "users at the top of the spike (default {:g})"),
    ("--spike-spawn-rate", "spawn_rate", float, "users started per second (default: users / ramp)"),
    ("--spike-ramp", "ramp_seconds", float, "seconds to reach the top (default {:g})"),
    ("--spike-hold", "hold_seconds", float, "seconds at the top (default {:g})"),
    ("--spike-idle", "idle_seconds", float, "idle seconds before Locust stops (default {:g})"),
)


# locust's event hooks are not typed.
@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _add_spike_arguments(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("spike", "spike-then-idle shape (loadtest.spike)")
    for flag, field, kind, text in SPIKE_OPTIONS:
        help_text = text.format(getattr(_STANDARD, field))
        group.add_argument(flag, type=kind, env_var=ENV_NAMES[field], default=None, help=help_text)


class SpikeArguments(Protocol):
    """What plan_from_options reads of Locust's parsed options: the --spike-* flags registered
    above, None where not given. A Protocol rather than argparse.Namespace: it says which
    attributes this file relies on, and any object that has them will do (Locust's Namespace at
    run time, a stand-in in a test)."""

    spike_users: int | None
    spike_spawn_rate: float | None
    spike_ramp: float | None
    spike_hold: float | None
    spike_idle: float | None


def plan_from_options(options: SpikeArguments | None) -> SpikePlan:
    """The plan from Locust's parsed options; an option left unset keeps the SPIKE_* value.

    Read with getattr and a None default all the same: options parsed without this file's
    parser hook (Locust driven as a library) lack them, and plan from SPIKE_* alone."""
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
        # locust's LoadTestShape is not typed; get_run_time() is seconds since the test started.
        return target_at(self.plan, self.get_run_time())  # type: ignore[no-untyped-call]
