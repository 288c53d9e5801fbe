"""The spike shape as Locust loads it, in a separate interpreter: importing Locust monkey-patches
the interpreter it is imported in (gevent), so this one never imports it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="Locust is not installed"
)


SHAPE_PROBE = """
import json, sys
from argparse import Namespace
from types import SimpleNamespace
from loadtest.shape import SpikeShape

options = Namespace(spike_users=5, spike_spawn_rate=None, spike_ramp=2.0, spike_hold=3.0,
                    spike_idle=4.0)
shape = SpikeShape()
shape.runner = SimpleNamespace(environment=SimpleNamespace(parsed_options=options))
ticks = {}
for at in (0.0, 4.9, 5.0, 8.9, 9.0):
    shape.get_run_time = lambda at=at: at
    ticks[str(at)] = shape.tick()
json.dump(ticks, sys.stdout)
"""


def test_shape_follows_the_plan_from_locust_options() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", SHAPE_PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    ticks = json.loads(probe.stdout)
    assert ticks["0.0"] == [5, 2.5]
    assert ticks["4.9"] == [5, 2.5]
    assert ticks["5.0"][0] == 0
    assert ticks["8.9"][0] == 0
    assert ticks["9.0"] is None


PLAN_PROBE = """
import json, sys
from types import SimpleNamespace
from loadtest.shape import plan_from_options
from loadtest.spike import plan_from_env

given = plan_from_options(SimpleNamespace(spike_users=7, spike_spawn_rate=None, spike_ramp=None,
                                          spike_hold=2.0, spike_idle=None))
json.dump({
    "users": given.users, "hold": given.hold_seconds, "idle_kept": given.idle_seconds ==
    plan_from_env().idle_seconds, "none": plan_from_options(None) == plan_from_env(),
    "unregistered": plan_from_options(SimpleNamespace()) == plan_from_env(),
}, sys.stdout)
"""


def test_the_plan_takes_the_options_given_and_keeps_the_rest() -> None:
    """Any object with the --spike-* attributes is options (the Protocol); options parsed without
    the hook, or none, keep the SPIKE_* plan."""
    probe = subprocess.run(
        [sys.executable, "-c", PLAN_PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == {
        "users": 7, "hold": 2.0, "idle_kept": True, "none": True, "unregistered": True
    }
