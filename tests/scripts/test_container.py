"""Docker mode's pieces that need no engine: the `docker run` line and finding a container's
cgroup from its pid. The full run under `--memory` is exercised by
`python -m scripts.verify run --limit-mode docker` and the container tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from app.memory.cgroup import CGROUP_ROOT
from app.memory.measure import MB
from scripts.verify.core.container import ContainerService, host_cgroup_of
from scripts.verify.core.engine_cgroup import EngineCgroup

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


class DesktopEngine:
    """An engine whose containers run in a VM: `docker inspect` gives the VM's pid (here this
    test's own, which is not in the container's cgroup), `docker exec` the recorded cgroup dump."""

    def __init__(self) -> None:
        self.dump = (Path(__file__).parent / "fixtures" / "engine").joinpath(
            "exec_tail_v2_from_fixture.txt"
        )

    def run(self, *args: str, check: bool = True, timeout: float = 0) -> CompletedProcess[str]:
        answers = {
            "run": CONTAINER_ID + "\n",
            "inspect": json.dumps({"Pid": os.getpid(), "Running": True}),
            "exec": self.dump.read_text(),
        }
        return CompletedProcess(["docker", *args], 0, answers.get(args[0], ""), "")


def test_where_the_host_cannot_see_the_container_its_cgroup_is_read_through_the_engine(
    tmp_path: Path,
) -> None:
    service = ContainerService(DesktopEngine(), "img", "jemalloc", tmp_path / "log", 5, 10, 500)
    service.start()
    try:
        assert service.cgroup_where == "engine" and service.host_pid is None
        [sample] = service.probe(1.0)
        assert sample.cgroup_working_set_bytes == 130 * MB  # the v2 fixture, read in the dump
        assert sample.pss_bytes is None  # no process figures from a VM
        assert service.failure() is None  # asked of the engine, not of this host's pid
    finally:
        assert isinstance(service.cgroup, EngineCgroup)
        service.cgroup.close()
