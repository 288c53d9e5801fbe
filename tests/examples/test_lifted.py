"""The lifted example (examples/lifted): a ten-line service of its own shape, with app/memory
copied in as a reader would copy it, verified end to end by the verifier as a user runs it.

Real processes: the verifier starts the service's own command (inside a real memory cgroup where
this machine allows one), runs the example's own Locust users under the spike-then-idle shape,
and must come to a verdict with its numbers (exit 0 or 1; 2 would mean no run was made). Then it
reads the same service, started apart, through its memory status route with --url. (compare
--command runs in the catalogue's and the login service's tests.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.memory.measure import MB
from scripts.verify.core.loadrun import locust_available
from scripts.verify.core.own_service import CommandServer
from tests.examples.lifting import CGROUP_V1, REPO, lift, serve_command

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not locust_available(), reason="needs Locust"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lift("lifted", tmp_path_factory.mktemp("lifted"))


def verify(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ADMIN_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "scripts.verify", "run", "--preset", "short", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def assert_a_verdict(done: subprocess.CompletedProcess[str], out: Path) -> dict[str, object]:
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: no run was made
    assert ("PASS" if done.returncode == 0 else "FAIL") in done.stdout
    assert "start MB" in done.stdout and "idle MB" in done.stdout
    timeline: dict[str, object] = json.loads((out / "timeline.json").read_text())
    return timeline


def test_the_verifier_starts_the_lifted_service_and_judges_it(
    project: Path, tmp_path: Path
) -> None:
    limit = ["--limit-mode", "cgroup"] if CGROUP_V1 else []
    done = verify(
        "--command", serve_command(project), "--locustfile", str(project / "locustfile.py"),
        *limit, "--out", str(tmp_path),
    )  # fmt: skip
    timeline = assert_a_verdict(done, tmp_path / "command")
    meta = timeline["meta"]
    assert isinstance(meta, dict)
    # Its status route was read with the token the verifier gave it, and it runs the preset's
    # interval because it reads MEMORY_CLEANUP_INTERVAL.
    assert meta["service_at_start"]["cleanup"]["interval_seconds"] == 5.0
    assert "preset short sets MEMORY_CLEANUP_INTERVAL=5" in done.stderr
    assert meta["locustfile"] == str(project / "locustfile.py")
    if CGROUP_V1:
        assert meta["cgroup"]["limit_bytes"] == 500 * MB


@pytest.fixture
def running(project: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The example started apart, as a deployment would run it: (base URL, its token)."""
    server = CommandServer(
        serve_command(project), tmp_path / "server.log", cleanup_interval_seconds=5,
        cache_ttl_seconds=10, limit_mb=500,
    ).start()  # fmt: skip
    try:
        server.wait_healthy(60)
        yield server.base_url, server.token
    finally:
        server.stop()


def test_the_verifier_reads_the_lifted_service_by_its_status_route(
    running: tuple[str, str], project: Path, tmp_path: Path
) -> None:
    base, token = running
    done = verify(
        "--url", base, "--token", token, "--locustfile", str(project / "locustfile.py"),
        "--out", str(tmp_path),
    )  # fmt: skip
    timeline = assert_a_verdict(done, tmp_path / "remote")
    meta = timeline["meta"]
    assert isinstance(meta, dict) and meta["mode"] == "remote"
    assert meta["service_at_start"]["allocator"]  # the memory package's own status document
