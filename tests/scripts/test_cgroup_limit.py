"""The cgroup v1 limit is real: a process that joins it and allocates past it is OOM-killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.verify.core.cgroup_limit import V1_MEMORY_ROOT, MemoryCgroup
from scripts.verify.core.errors import RunNotMade

needs_v1_root = pytest.mark.skipif(
    os.geteuid() != 0 or not (V1_MEMORY_ROOT / "memory.limit_in_bytes").exists(),
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


@needs_v1_root
def test_allocating_past_the_limit_is_oom_killed_and_counted() -> None:
    cgroup = MemoryCgroup(limit_mb=64).create()
    try:
        under = run_inside(cgroup, 16)
        assert under.returncode == 0 and under.stdout.strip() == "held"
        assert cgroup.oom_kills() == 0
        over = run_inside(cgroup, 256)
        assert over.returncode == -signal.SIGKILL
        assert cgroup.oom_kills() >= 1
        assert cgroup.usage_bytes() is not None
    finally:
        cgroup.remove()
    assert not cgroup.path.exists()


def test_a_cgroup_that_cannot_be_made_is_a_run_not_made(tmp_path: Path) -> None:
    with pytest.raises(RunNotMade, match="v1 memory controller"):
        MemoryCgroup(limit_mb=64, root=tmp_path).create()
