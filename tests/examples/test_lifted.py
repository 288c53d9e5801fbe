"""The lifted example (examples/lifted): a ten-line service of its own shape, with app/memory
copied in as a reader would copy it, verified end to end by the verifier as a user runs it.

Real processes: the verifier starts the service's own command (inside a real memory cgroup where
this machine allows one), runs the example's own Locust users under the spike-then-idle shape,
and must come to a verdict with its numbers (exit 0 or 1; 2 would mean no run was made). Then it
reads the same service, started apart, through its memory status route with --url.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.memory.cgroup import CGROUP_ROOT
from app.memory.measure import MB
from scripts.verify.core.loadrun import locust_available
from scripts.verify.core.own_service import CommandServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lifted"
CGROUP_V1 = (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").exists() and os.geteuid() == 0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not locust_available(), reason="needs Locust"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's two files and app/memory copied in beside them, as the example says."""
    root = tmp_path_factory.mktemp("lifted")
    for name in ("service.py", "locustfile.py"):
        shutil.copy(EXAMPLE / name, root / name)
    shutil.copytree(
        REPO / "app" / "memory", root / "memory", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def serve_command(project: Path) -> str:
    return f"{sys.executable} -m uvicorn --app-dir {project} service:app --port {{port}}"


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


def test_compare_runs_each_profile_on_the_lifted_service_and_recommends_one(
    project: Path, tmp_path: Path
) -> None:
    """Two rows, two rounds each (A B A B): each row is the profile's variables set for the
    service's own command, with the row's own settings over them (the default profile with its
    cleanup loop off), and the table ends with the recommendation."""
    limit = ["--limit-mode", "cgroup"] if CGROUP_V1 else []
    env = {k: v for k, v in os.environ.items() if k != "ADMIN_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "scripts.verify", "compare", "--preset", "short",
         "--command", serve_command(project), "--locustfile", str(project / "locustfile.py"),
         "--rows", "baseline,jemalloc-nopymalloc-cleanup-off", "--rounds", "2", "--no-plot", *limit,
         "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    labels = [row["label"] for row in summary["rows"]]
    off = "jemalloc-nopymalloc-cleanup-off"
    assert labels == ["baseline #1", f"{off} #1", "baseline #2", f"{off} #2"]
    assert all(row["rss_peak_mb"] for row in summary["rows"])  # the kernel's, in every row
    # Each row ran under its profile: the service's own status says which allocator it found.
    for label in labels:
        folder = tmp_path / label.replace(" #", "-")
        meta = json.loads((folder / "timeline.json").read_text())["meta"]
        allocator = meta["service_at_start"]["allocator"]
        assert allocator == ("glibc" if label.startswith("baseline") else "jemalloc"), label
    for folder in ("baseline-1", f"{off}-2"):  # the profile's MEMORY_CLEANUP=0, and the row's
        meta = json.loads((tmp_path / folder / "timeline.json").read_text())["meta"]
        assert meta["service_at_start"]["cleanup"]["enabled"] is False, folder
    assert done.stdout.strip().splitlines()[-1].startswith("recommendation: ")
