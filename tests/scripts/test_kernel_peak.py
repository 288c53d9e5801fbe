"""The kernel's high-water marks: a process's VmHWM and a memory cgroup's, read and reset for real
where this machine allows (any process for VmHWM; root and cgroup v1 for the cgroup), on fixture
trees for v2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.memory.measure import MB
from scripts.verify.core.cgroup_limit import MemoryCgroup
from scripts.verify.core.kernel_peak import (
    NOT_READ,
    CgroupPeakFile,
    KernelPeak,
    PeakMarks,
    highest,
    process_peak,
    reset_process_peak,
)
from tests.memory.conftest import FIXTURES
from tests.scripts.test_cgroup_limit import needs_v1_root

# A process that holds 120 MB for a moment, lets it go (glibc unmaps a block this large at
# once), then waits for a line on stdin: its peak stays, its RSS falls.
BURST = """
import sys
block = bytearray(120 * 1024 * 1024)
del block
print("freed", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def burst() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", BURST], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "freed"
    yield process
    process.communicate("\n", timeout=10)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_freed_block_stays_in_the_peak_until_it_is_reset(burst: subprocess.Popen[str]) -> None:
    peak = process_peak(burst.pid)
    assert peak is not None and peak >= 120 * MB
    assert rss(burst.pid) < 60 * MB  # the samples would not see it
    assert reset_process_peak(burst.pid)
    after = process_peak(burst.pid)
    assert after is not None and after < 60 * MB


def test_a_gone_process_has_no_peak(tmp_path: Path) -> None:
    assert process_peak(999_999_999) is None
    assert not reset_process_peak(999_999_999)
    assert process_peak(1, proc=tmp_path) is None  # no status file there


def test_marks_sum_the_processes_and_say_when_they_were_reset(
    burst: subprocess.Popen[str],
) -> None:
    marks = PeakMarks(lambda: [burst.pid])
    first = marks.take()  # since the process began: not reset before
    assert not first.since_reset and first.rss_bytes is not None and first.rss_bytes >= 120 * MB
    assert first.largest_rss_bytes == first.rss_bytes and first.cgroup_bytes is None
    second = marks.take()  # since the first take, which reset it
    assert second.since_reset and second.rss_bytes is not None and second.rss_bytes < 60 * MB


def test_marks_without_processes_or_cgroup_are_not_read() -> None:
    reading = PeakMarks(lambda: []).take()
    assert reading == NOT_READ and not reading.known


@needs_v1_root
def test_a_v1_cgroup_keeps_its_peak_until_it_is_reset() -> None:
    cgroup = MemoryCgroup(limit_mb=400).create()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", BURST],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=cgroup.join,
        )
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "freed"
            peak = cgroup.peak_file()
            high = peak.peak()
            assert high is not None and high >= 120 * MB
            usage = cgroup.read()
            assert usage is not None and usage.peak_bytes == high  # the reader sees it too
            assert peak.reset_peak()
            low = peak.peak()
            assert low is not None and low < high - 60 * MB
        finally:
            process.communicate("\n", timeout=10)
    finally:
        cgroup.remove()


def test_a_v2_peak_is_read_from_memory_peak(tmp_path: Path) -> None:
    folder = tmp_path / "cgroup"
    shutil.copytree(FIXTURES / "cgroup" / "v2" / "sys" / "fs" / "cgroup", folder)
    peak = CgroupPeakFile(folder)
    try:
        assert peak.peak() == 230 * MB
    finally:
        peak.close()


def test_a_cgroup_without_a_peak_file_reads_none_and_cannot_reset(tmp_path: Path) -> None:
    peak = CgroupPeakFile(tmp_path)
    assert peak.peak() is None and not peak.reset_peak()


def test_the_highest_of_phases_takes_each_mark_and_is_reset_only_if_all_were() -> None:
    load = KernelPeak(cgroup_bytes=300, rss_bytes=250, largest_rss_bytes=250, since_reset=True)
    idle = KernelPeak(cgroup_bytes=200, rss_bytes=None, largest_rss_bytes=None, since_reset=False)
    assert highest([load, idle]) == KernelPeak(300, 250, 250, since_reset=False)
    assert highest([]) == NOT_READ
    assert KernelPeak.from_dict(load.as_dict()) == load
