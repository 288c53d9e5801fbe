"""Process memory figures (bytes), through psutil.

RSS is one read of /proc/self/statm and cheap enough to sample; USS and PSS walk every mapping
(/proc/<pid>/smaps_rollup) and cost milliseconds on a large heap, so they are read on demand only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psutil

MB = 1024 * 1024


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


def process_memory(pid: int | None = None) -> ProcessMemory:
    process = psutil.Process(pid)
    try:
        full = process.memory_full_info()
    except (psutil.AccessDenied, NotImplementedError, OSError):
        return ProcessMemory(process.pid, int(process.memory_info().rss), None, None)
    return ProcessMemory(
        pid=process.pid,
        rss_bytes=int(full.rss),
        uss_bytes=int(getattr(full, "uss", 0)) or None,
        pss_bytes=int(getattr(full, "pss", 0)) or None,
    )


def fmt_mb(value: int | float | None) -> str:
    """Megabytes with one decimal, as the release log line shows them."""
    return "n/a" if value is None else f"{value / MB:.1f}MB"

