"""The Locust file as Locust loads it, in a separate interpreter: importing Locust monkey-patches
the interpreter it is imported in (gevent), so this one never imports it. No connection is made."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="Locust is not installed"
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_locust_finds_the_user_class() -> None:
    listed = _run("-m", "locust", "-f", str(LOCUSTFILE), "--list")
    assert listed.returncode == 0, listed.stderr
    assert "ServiceClient" in listed.stdout


def test_spike_and_traffic_arguments_are_accepted() -> None:
    listed = _run(
        "-m", "locust", "-f", str(LOCUSTFILE), "--list",
        "--spike-users", "3", "--spike-spawn-rate", "1", "--spike-ramp", "1",
        "--spike-hold", "2", "--spike-idle", "0", "--bulk-sizes", "200:1", "--think-time", "0,1",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr


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
    probe = _run("-c", SHAPE_PROBE)
    assert probe.returncode == 0, probe.stderr
    ticks = json.loads(probe.stdout)
    assert ticks["0.0"] == [5, 2.5]
    assert ticks["4.9"] == [5, 2.5]
    assert ticks["5.0"][0] == 0
    assert ticks["8.9"][0] == 0
    assert ticks["9.0"] is None
