"""The kernel's high-water marks over each phase of a run: the most memory it charged, which a
sample taken once a second can miss.

A 64 MiB block that glibc maps and unmaps between two samples never shows in the sampled curve,
yet the kernel charged it, and the OOM killer counts what the kernel charges. Two marks are
read at the end of each phase and reset for the next where the kernel allows:

- the memory cgroup's: v1 `memory.max_usage_in_bytes` (reset by writing 0), v2 `memory.peak`
  (reset, on Linux 6.12 and later, by a write through a descriptor kept open, for later reads
  through that descriptor); what a container's limit is measured against;
- each process's `VmHWM` in /proc/<pid>/status, its peak resident set (reset by writing 5 to
  /proc/<pid>/clear_refs, Linux 4.0 and later). Summed over a server's processes, it is an upper
  bound on the tree's peak (each process may peak at another moment), exact for one process.

A mark that could not be reset covers everything since the cgroup or the process began, and
says so (``since_reset`` False): it is still the most the kernel charged, just over a longer
time. Where no mark can be read (a deployed service seen through its status route), the figures
are None and the report says the peak is not known, rather than showing the sampled one in its
place.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

PROC = Path("/proc")
CLEAR_PEAK_RSS = "5"  # /proc/<pid>/clear_refs: reset the peak resident set to the current RSS


@dataclass(frozen=True)
class KernelPeak:
    """The marks over one phase, bytes; None where the kernel gave none."""

    cgroup_bytes: int | None = None  # the memory cgroup's high-water mark
    rss_bytes: int | None = None  # VmHWM summed over the server's processes
    largest_rss_bytes: int | None = None  # the largest one process's VmHWM
    since_reset: bool = False  # True: over this phase alone; False: since the cgroup/process began

    @property
    def known(self) -> bool:
        return self.cgroup_bytes is not None or self.rss_bytes is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> KernelPeak:
        return cls(
            cgroup_bytes=_int_or_none(raw.get("cgroup_bytes")),
            rss_bytes=_int_or_none(raw.get("rss_bytes")),
            largest_rss_bytes=_int_or_none(raw.get("largest_rss_bytes")),
            since_reset=bool(raw.get("since_reset", False)),
        )


NOT_READ = KernelPeak()


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def highest(peaks: Iterable[KernelPeak]) -> KernelPeak:
    """The marks over several phases: the highest of each; since_reset only if all were."""
    chosen = list(peaks)

    def top(values: Iterable[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    return KernelPeak(
        cgroup_bytes=top(p.cgroup_bytes for p in chosen),
        rss_bytes=top(p.rss_bytes for p in chosen),
        largest_rss_bytes=top(p.largest_rss_bytes for p in chosen),
        since_reset=bool(chosen) and all(p.since_reset for p in chosen),
    )


def recorded_peak(extra: Mapping[str, Any]) -> KernelPeak | None:
    """The highest marks over the load and the idle window, from a timeline's record
    (``kernel_peaks``, by phase); None in a timeline recorded without them."""
    recorded = extra.get("kernel_peaks") or {}
    chosen = [KernelPeak.from_dict(recorded[name]) for name in ("load", "idle") if name in recorded]
    return highest(chosen) if chosen else None


def process_peak(pid: int, proc: Path = PROC) -> int | None:
    """The process's peak resident set (VmHWM) since it began or was last reset; None if the
    process is gone or its status cannot be read."""
    try:
        lines = (proc / str(pid) / "status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmHWM:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None


def reset_process_peak(pid: int, proc: Path = PROC) -> bool:
    """Start the process's peak over from its current RSS; False where the kernel refuses (not
    the process's owner, nor root) or the process is gone."""
    try:
        (proc / str(pid) / "clear_refs").write_text(CLEAR_PEAK_RSS)
    except OSError:
        return False
    return True


class PeakCgroup(Protocol):
    """A memory cgroup whose high-water mark can be read, and reset where the kernel allows."""

    def peak(self) -> int | None: ...

    def reset_peak(self) -> bool: ...


class CgroupPeakFile:
    """The high-water mark of a cgroup folder this host can see.

    v1: `memory.max_usage_in_bytes`, reset by writing 0. v2: `memory.peak` through one descriptor
    held open, reset by a write through it (Linux 6.12+); before 6.12 the write fails and the
    mark covers the cgroup's whole life.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._v1 = folder / "memory.max_usage_in_bytes"
        self._fd: int | None = None
        self._opened = False

    def _open(self) -> None:
        """The v2 descriptor, opened at the first use (the cgroup may be made after this)."""
        if self._opened:
            return
        self._opened = True
        if not self._v1.exists() and (self.folder / "memory.peak").exists():
            with contextlib.suppress(OSError):
                self._fd = os.open(self.folder / "memory.peak", os.O_RDWR)

    def peak(self) -> int | None:
        self._open()
        try:
            if self._fd is not None:
                text = os.pread(self._fd, 64, 0).decode()
            else:
                text = self._v1.read_text()
        except OSError:
            return None
        text = text.strip()
        return int(text) if text.isdigit() else None

    def reset_peak(self) -> bool:
        self._open()
        try:
            if self._fd is not None:
                os.pwrite(self._fd, b"reset\n", 0)
            elif self._v1.exists():
                self._v1.write_text("0")
            else:
                return False
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._opened = False


class PeakMarks:
    """Reads the marks at the end of a phase and resets them for the next.

    ``pids`` lists the server's processes at the moment of reading (workers come and go);
    ``cgroup`` is the run's memory cgroup, if it has one this host can read.
    """

    def __init__(
        self,
        pids: Callable[[], list[int]],
        cgroup: PeakCgroup | None = None,
        proc: Path = PROC,
    ) -> None:
        self.pids = pids
        self.cgroup = cgroup
        self.proc = proc
        self._reset = False  # whether the last take reset every mark it read

    def take(self) -> KernelPeak:
        """The marks since the last take (or since the start, the first time), then reset."""
        pids = self.pids()
        peaks = [p for p in (process_peak(pid, self.proc) for pid in pids) if p is not None]
        reading = KernelPeak(
            cgroup_bytes=self.cgroup.peak() if self.cgroup is not None else None,
            rss_bytes=sum(peaks) if peaks else None,
            largest_rss_bytes=max(peaks) if peaks else None,
            since_reset=self._reset,
        )
        reset = [reset_process_peak(pid, self.proc) for pid in pids]
        if self.cgroup is not None:
            reset.append(self.cgroup.reset_peak())
        self._reset = bool(reset) and all(reset)
        return reading
