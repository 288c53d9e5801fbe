"""Docker mode's pieces that need no engine: the `docker run` line and finding a container's
cgroup from its pid. The full run under `--memory` is exercised by
`python -m scripts.verify run --limit-mode docker` and the container tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.memory.cgroup import CGROUP_ROOT
from scripts.verify.core.container import ContainerService, host_cgroup_of

CONTAINER_ID = "4f2a9c0d1e2b" + "0" * 52


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


def proc_with(tmp_path: Path, pid: int, line: str) -> Path:
    (tmp_path / "proc" / str(pid)).mkdir(parents=True)
    (tmp_path / "proc" / str(pid) / "cgroup").write_text(line + "\n")
    return tmp_path / "proc"


@pytest.mark.skipif(not (CGROUP_ROOT / "memory").is_dir(), reason="needs the v1 memory controller")
def test_a_real_docker_cgroup_path_on_this_host_is_read_where_it_is(tmp_path: Path) -> None:
    folder = CGROUP_ROOT / "memory" / f"docker-test-{os.getpid()}" / CONTAINER_ID
    folder.mkdir(parents=True)
    try:
        proc = proc_with(tmp_path, 7, f"12:memory:/{folder.relative_to(CGROUP_ROOT / 'memory')}")
        found = host_cgroup_of(7, CONTAINER_ID, proc=proc)
        assert found is not None and found.path == folder
        reading = found.read()
        assert reading is not None and reading.version == 1 and reading.usage_bytes is not None
    finally:
        folder.rmdir()
        folder.parent.rmdir()


def test_a_pid_whose_cgroup_does_not_name_the_container_is_not_it(tmp_path: Path) -> None:
    # Docker Desktop: State.Pid is the VM's; this host's process by that number is another one.
    proc = proc_with(tmp_path, 7, "0::/user.slice")
    assert host_cgroup_of(7, CONTAINER_ID, proc=proc) is None


def test_a_gone_pid_has_no_cgroup(tmp_path: Path) -> None:
    assert host_cgroup_of(123456, CONTAINER_ID, proc=tmp_path) is None
