"""Docker mode's pieces that need no engine: the `docker run` line and finding a pid's cgroup.
The full run under `--memory` is exercised by `python -m scripts.verify --limit-mode docker`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scripts.verify.core.cgroup_limit import V1_MEMORY_ROOT
from scripts.verify.core.container import ContainerService, memory_cgroup_of


def test_the_container_runs_under_a_hard_limit_on_loopback_only(tmp_path: Path) -> None:
    service = ContainerService(
        engine=None,
        image="lean-memory-service:test",
        profile="jemalloc",
        log_path=tmp_path / "server.log",
        cleanup_interval_seconds=5,
        cache_ttl_seconds=10,
        limit_mb=500,
        overrides={"MEMORY_CLEANUP_THRESHOLD_MB": "50"},
    )
    argv = service.run_argv()
    assert argv[-1] == "lean-memory-service:test"
    assert "--memory=500m" in argv and "--memory-swap=500m" in argv  # no swap to hide behind
    assert f"127.0.0.1:{service.port}:8000" in argv
    env = {argv[i + 1] for i, a in enumerate(argv) if a == "-e"}
    assert "MEMORY_PROFILE=jemalloc" in env
    assert "MEMORY_CLEANUP_INTERVAL=5" in env and "CACHE_TTL_SECONDS=10" in env
    assert "MEMORY_CLEANUP_THRESHOLD_MB=50" in env
    assert f"ADMIN_TOKEN={service.token}" in env


@pytest.mark.skipif(not V1_MEMORY_ROOT.is_dir(), reason="needs the cgroup v1 memory controller")
def test_a_pids_memory_cgroup_is_found_from_proc() -> None:
    line = next(
        entry
        for entry in Path("/proc/self/cgroup").read_text().splitlines()
        if "memory" in entry.split(":")[1].split(",")
    )
    expected = V1_MEMORY_ROOT / line.split(":", 2)[2].lstrip("/")
    assert memory_cgroup_of(os.getpid()) == expected


def test_a_gone_pid_has_no_cgroup(tmp_path: Path) -> None:
    assert memory_cgroup_of(123456, proc=tmp_path) is None
