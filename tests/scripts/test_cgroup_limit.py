"""The cgroup a run is judged in: made with a limit on v1 or v2, found from a pid, read through
the memory manager's reader. The v1 limit is real on this machine: a process that joins it and
allocates past it is OOM-killed; v1 and v2 are also made on fixture trees."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.memory.cgroup import CGROUP_ROOT, CgroupMemory
from app.memory.measure import MB
from scripts.verify.core.cgroup_events import MemoryEvents, read_memory_events
from scripts.verify.core.cgroup_limit import HostCgroup, MemoryCgroup, record_of, with_cgroup
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.sampling import Sample
from tests.memory.conftest import FIXTURES

V1_MEMORY = CGROUP_ROOT / "memory"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making a cgroup needs root")
needs_v1_root = pytest.mark.skipif(
    os.geteuid() != 0 or not (V1_MEMORY / "memory.limit_in_bytes").exists(),
    reason="needs root and the cgroup v1 memory controller",
)

ALLOCATE = "import sys; held = bytearray(int(sys.argv[1]) * 1024 * 1024); print('held', flush=True)"


def run_inside(cgroup: MemoryCgroup, megabytes: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ALLOCATE, str(megabytes)],
        preexec_fn=cgroup.join,
        capture_output=True,
        text=True,
        timeout=60,
    )


def fixture_root(tmp_path: Path, tree: str) -> Path:
    shutil.copytree(FIXTURES / "cgroup" / tree, tmp_path / tree)
    return tmp_path / tree / "sys" / "fs" / "cgroup"


@needs_v1_root
def test_allocating_past_the_limit_is_oom_killed_and_counted() -> None:
    cgroup = MemoryCgroup(limit_mb=64).create()
    try:
        assert cgroup.path.parent == V1_MEMORY
        under = run_inside(cgroup, 16)
        assert under.returncode == 0 and under.stdout.strip() == "held"
        assert cgroup.events().oom_kills == 0
        over = run_inside(cgroup, 256)
        assert over.returncode == -signal.SIGKILL
        assert (cgroup.events().oom_kills or 0) >= 1
        reading = cgroup.read()
        assert reading is not None and reading.version == 1
        assert reading.limit_bytes == 64 * MB and reading.usage_bytes is not None
        assert record_of(cgroup, "host")["oom_kills"] >= 1
    finally:
        cgroup.remove()
    assert not cgroup.path.exists()


@needs_root
def test_on_v1_the_limit_goes_in_memory_limit_in_bytes(tmp_path: Path) -> None:
    root = fixture_root(tmp_path, "v1")
    cgroup = MemoryCgroup(limit_mb=64, root=root).create()
    assert cgroup.path.parent == root / "memory"
    assert (cgroup.path / "memory.limit_in_bytes").read_text() == str(64 * MB)
    reading = cgroup.read()
    assert reading is not None and (reading.version, reading.limit_bytes) == (1, 64 * MB)
    assert reading.path == f"/{cgroup.path.name}"


@needs_root
def test_on_v2_the_limit_goes_in_memory_max_under_a_parent_that_delegates_memory(
    tmp_path: Path,
) -> None:
    root = fixture_root(tmp_path, "v2")
    (root / "cgroup.subtree_control").write_text("cpu memory pids\n")
    cgroup = MemoryCgroup(limit_mb=64, root=root).create()
    assert cgroup.path.parent == root
    assert (cgroup.path / "memory.max").read_text() == str(64 * MB)
    (cgroup.path / "memory.current").write_text(f"{40 * MB}\n")
    (cgroup.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    reading = cgroup.read()
    assert reading == CgroupMemory(2, f"/{cgroup.path.name}", 64 * MB, 40 * MB, 40 * MB)
    assert cgroup.events() == MemoryEvents(oom_kills=1, limit_hits=3)
    cgroup.remove(timeout=0)


@pytest.mark.parametrize("tree", ["v2", "none"])
def test_without_a_memory_controller_to_use_the_run_is_not_made(tmp_path: Path, tree: str) -> None:
    with pytest.raises(RunNotMade, match="needs a memory controller"):
        MemoryCgroup(limit_mb=64, root=fixture_root(tmp_path, tree)).create()


def test_a_pids_cgroup_is_found_where_the_host_can_see_it(tmp_path: Path) -> None:
    root = fixture_root(tmp_path, "v2-nested")
    (tmp_path / "proc" / "42").mkdir(parents=True)
    (tmp_path / "proc" / "42" / "cgroup").write_text("0::/system.slice/app.service\n")
    found = HostCgroup.of_pid(42, root, proc=tmp_path / "proc")
    assert found is not None and found.path == root / "system.slice" / "app.service"
    assert HostCgroup.of_pid(43, root, proc=tmp_path / "proc") is None


def test_samples_take_the_cgroup_figures_and_keep_the_rest() -> None:
    root = FIXTURES / "cgroup" / "v2" / "sys" / "fs" / "cgroup"
    cgroup = HostCgroup(root, root)
    sample = with_cgroup(Sample(t=1.0, pss_bytes=5), cgroup)
    assert (sample.pss_bytes, sample.cgroup_usage_bytes) == (5, 150 * MB)
    assert sample.cgroup_working_set_bytes == 130 * MB
    assert with_cgroup(sample, None) is sample
    record = record_of(cgroup, "host")
    assert record == {
        "where": "host",
        "version": 2,
        "path": "/",
        "limit_bytes": 512 * MB,
        "limit_hits": None,
        "oom_kills": None,
    }


def test_a_host_reading_a_path_it_cannot_see_gets_none_not_its_own_root(tmp_path: Path) -> None:
    root = fixture_root(tmp_path, "v2")
    (tmp_path / "proc" / "7").mkdir(parents=True)
    (tmp_path / "proc" / "7" / "cgroup").write_text("0::/system.slice/docker-4f2a9c.scope\n")
    assert HostCgroup.of_pid(7, root, proc=tmp_path / "proc") is None


def test_event_counts_on_v2_and_v1(tmp_path: Path) -> None:
    v2 = fixture_root(tmp_path, "v2")
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\n")
    assert read_memory_events(v2) == MemoryEvents(oom_kills=2, limit_hits=12)
    v1 = fixture_root(tmp_path, "v1") / "memory" / "docker" / "4f2a9c"
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    (v1 / "memory.failcnt").write_text("7\n")
    assert read_memory_events(v1) == MemoryEvents(oom_kills=1, limit_hits=7)


def test_event_counts_the_kernel_does_not_keep_are_none(tmp_path: Path) -> None:
    assert read_memory_events(fixture_root(tmp_path, "v2")) == MemoryEvents(None, None)
