"""Process memory figures (bytes): RSS through psutil, USS and PSS from smaps_rollup.

RSS is one read of /proc/self/statm and cheap enough to sample; USS and PSS walk every mapping
(/proc/<pid>/smaps_rollup) and cost milliseconds on a large heap, so they are read on demand only.
They are read from the file itself rather than through psutil's memory_full_info(), which psutil
deprecates for 8.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from .smaps import PROC_ROOT, read_rollup

MB = 1024 * 1024
# psutil 7.2 added heap_info(): glibc's mallinfo2() on Linux. Checked once, as psutil's HAS_*.
HAS_HEAP_INFO = hasattr(psutil, "heap_info")


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    rss_bytes: int
    # USS: private memory freed if the process exited now; PSS: private plus a fair share of
    # shared pages. Both None where the platform does not report them.
    uss_bytes: int | None
    pss_bytes: int | None

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)


def rss_bytes(pid: int | None = None) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def process_memory(pid: int | None = None, proc_root: Path = PROC_ROOT) -> ProcessMemory:
    process = psutil.Process(pid)
    rss = int(process.memory_info().rss)
    rollup = read_rollup(process.pid, proc_root)
    if rollup is None:
        return ProcessMemory(process.pid, rss, None, None)
    return ProcessMemory(process.pid, rss, rollup.uss_bytes or None, rollup.pss_bytes or None)


@dataclass(frozen=True)
class HeapUsage:
    """The allocator's own account of its heap, in bytes, beside the kernel's (smaps): what
    the program holds in malloc'd blocks against what is resident shows fragmentation."""

    source: str  # where the figures come from, e.g. "psutil.heap_info (glibc mallinfo2)"
    figures: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, **self.figures}


def glibc_heap() -> HeapUsage | None:
    """glibc's in-use bytes in its arenas (heap_used) and in mmap'd blocks (mmap_used).

    Only meaningful when glibc is the allocator: under a preloaded jemalloc, mallinfo2() still
    answers, for glibc's nearly unused arenas."""
    if not HAS_HEAP_INFO:
        return None
    info = psutil.heap_info()
    return HeapUsage(
        "psutil.heap_info (glibc mallinfo2)",
        {"heap_used_bytes": int(info.heap_used), "mmap_used_bytes": int(info.mmap_used)},
    )


def fmt_mb(value: int | float | None) -> str:
    """Megabytes with one decimal, as the release log line shows them."""
    return "n/a" if value is None else f"{value / MB:.1f}MB"

