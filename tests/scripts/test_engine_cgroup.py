"""A container's cgroup read through the engine (`docker exec ... tail`), for hosts that cannot
see it: recorded output, laid out and read by the memory manager's own reader."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.memory.cgroup import CgroupMemory
from app.memory.measure import MB
from scripts.verify.core.cgroup_events import MemoryEvents
from scripts.verify.core.engine_cgroup import FILES, EngineCgroup, parse_dump, read_dump

ENGINE = Path(__file__).parent / "fixtures" / "engine"
# The v2 fixture tree (tests/memory/fixtures/cgroup/v2) as `tail -n +1` prints it in a container
# with a private cgroup namespace.
V2_DUMP = (ENGINE / "exec_tail_v2_from_fixture.txt").read_text()
# Recorded on this machine (cgroup v1, no cgroup namespace) from a container of the service image
# under --memory=500m, at rest; `docker stats` said 42.08MiB / 500MiB a moment later.
V1_RECORDED = (ENGINE / "exec_tail_v1_recorded.txt").read_text()


class RecordedEngine:
    """Answers `docker exec` with recorded output, and keeps the argv it was given."""

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.calls: list[tuple[str, ...]] = []

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        return subprocess.CompletedProcess(["docker", *args], 1, self.stdout, "tail: cannot open")


def test_the_dump_splits_into_files_and_skips_what_tail_could_not_open() -> None:
    files = parse_dump(V2_DUMP)
    assert files["/proc/self/cgroup"] == "0::/\n"
    assert files["/sys/fs/cgroup/memory.max"] == "536870912\n"
    assert "/sys/fs/cgroup/memory/memory.limit_in_bytes" not in files
    assert files["/sys/fs/cgroup/memory.stat"].count("\n") == 7


def test_v2_reads_as_the_service_reads_its_own_cgroup(tmp_path: Path) -> None:
    reading, events = read_dump(V2_DUMP, tmp_path / "scratch")
    assert reading == CgroupMemory(2, "/", 512 * MB, 150 * MB, 130 * MB)
    assert events == MemoryEvents(oom_kills=0, limit_hits=0)


def test_v1_recorded_from_a_real_container_reads_its_limit_and_working_set(tmp_path: Path) -> None:
    reading, events = read_dump(V1_RECORDED, tmp_path / "scratch")
    assert reading is not None and reading.version == 1
    assert reading.path.startswith("/docker/1d6a2e9f487e")  # the host path; the mount is its own
    assert reading.limit_bytes == 500 * MB
    assert reading.usage_bytes == 44941312
    assert reading.working_set_bytes == 44941312 - 421888  # less total_inactive_file
    assert events == MemoryEvents(oom_kills=0, limit_hits=0)


def test_a_dump_with_no_memory_cgroup_reads_none(tmp_path: Path) -> None:
    assert read_dump("", tmp_path / "scratch") == (None, MemoryEvents(None, None))
    only_proc = "==> /proc/self/cgroup <==\n0::/\n"
    assert read_dump(only_proc, tmp_path / "scratch")[0] is None


def test_the_engine_is_asked_for_the_container_files_every_read() -> None:
    engine = RecordedEngine(V2_DUMP)
    cgroup = EngineCgroup(engine, "lean-memory-verify-abc")
    try:
        assert cgroup.read() is not None and cgroup.read() is not None
        assert cgroup.events().oom_kills == 0
    finally:
        cgroup.close()
    assert not cgroup.scratch.exists()
    assert len(engine.calls) == 3
    assert engine.calls[0] == ("exec", "lean-memory-verify-abc", "tail", "-n", "+1", *FILES)


@pytest.mark.parametrize("text", ["garbage", "==> /sys/fs/cgroup/memory.max <==\nmax\n"])
def test_output_that_is_not_a_cgroup_dump_reads_none(tmp_path: Path, text: str) -> None:
    assert read_dump(text, tmp_path / "scratch")[0] is None
