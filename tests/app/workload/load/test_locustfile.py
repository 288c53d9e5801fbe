"""The reference workload's Locust file as the verifier loads it, beside the spike shape, in a
separate interpreter: importing Locust monkey-patches the interpreter it is imported in (gevent),
so this one never imports it. No connection is made."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from app.workload.load import USERS
from scripts.verify.core.declared import locust_files

REPO_ROOT = Path(__file__).resolve().parents[4]
FILES = locust_files(USERS)  # the users and loadtest/shape.py

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="Locust is not installed"
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_locust_finds_the_user_class() -> None:
    listed = _run("-m", "locust", "-f", FILES, "--list")
    assert listed.returncode == 0, listed.stderr
    assert "ServiceClient" in listed.stdout


def test_the_options_the_workload_declares_are_the_files_own() -> None:
    """What the verifier adds to the command line for a spike and a warm-up, and the TTL option,
    are arguments this file registers: a declared option it lacks would stop Locust."""
    assert USERS.ttl_option is not None
    for options in (USERS.spike_options, USERS.warmup_options):
        listed = _run(
            "-m", "locust", "-f", FILES, "--list",
            "--spike-users", "3", "--spike-spawn-rate", "1", "--spike-ramp", "1",
            "--spike-hold", "2", "--spike-idle", "0", *options, USERS.ttl_option, "10",
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
