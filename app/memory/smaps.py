"""Where a process's resident memory sits, by kind of mapping, from /proc/<pid>/smaps, and
its totals (USS, PSS) from /proc/<pid>/smaps_rollup.

This is the profile the seed's "201 MB [heap], 120 MB [anon]" came from: [heap] is glibc's main
arena (brk), [anon] holds thread arenas, pymalloc arenas and large mmap'd blocks, files are code
and data mapped from disk.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PROC_ROOT = Path("/proc")


@dataclass(frozen=True)
class MappingUsage:
    kind: str
    mappings: int
    rss_bytes: int
    pss_bytes: int
    anonymous_bytes: int
    swap_bytes: int

    def as_dict(self) -> dict[str, int | str]:
        return {
            "kind": self.kind,
            "mappings": self.mappings,
            "rss_bytes": self.rss_bytes,
            "pss_bytes": self.pss_bytes,
            "anonymous_bytes": self.anonymous_bytes,
            "swap_bytes": self.swap_bytes,
        }


def classify(pathname: str) -> str:
    """Group a mapping's pathname: pseudo-paths kept ([heap], [stack]...), files as 'file'."""
    if not pathname:
        return "[anon]"
    if pathname.startswith("["):
        return "[stack]" if pathname.startswith("[stack") else pathname
    if pathname.endswith(" (deleted)") or pathname.startswith("/memfd:"):
        return "[anon-shared]"
    return "file"


def _is_header(line: str) -> bool:
    # Header lines start with an address range "7f..-7f.. "; field lines with "Name:".
    head = line.split(" ", 1)[0]
    return "-" in head and ":" not in head


def parse_smaps(text: str) -> list[MappingUsage]:
    """Sum Rss/Pss/Anonymous/Swap (kB in the file) per kind, largest RSS first."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    current: list[int] | None = None
    fields = {"Rss:": 1, "Pss:": 2, "Anonymous:": 3, "Swap:": 4}
    for line in text.splitlines():
        if _is_header(line):
            parts = line.split(None, 5)
            current = totals[classify(parts[5].strip() if len(parts) > 5 else "")]
            current[0] += 1
            continue
        if current is None:
            continue
        name, _, rest = line.partition(" ")
        index = fields.get(name)
        if index is not None:
            current[index] += int(rest.split()[0]) * 1024
    usages = [MappingUsage(kind, *values) for kind, values in totals.items()]
    return sorted(usages, key=lambda u: u.rss_bytes, reverse=True)


def read_breakdown(pid: int | str = "self", proc_root: Path = PROC_ROOT) -> list[MappingUsage]:
    """The breakdown, or an empty list where smaps cannot be read (not Linux, no permission)."""
    try:
        text = (proc_root / str(pid) / "smaps").read_text()
    except OSError:
        return []
    return parse_smaps(text)


@dataclass(frozen=True)
class Rollup:
    """A process's totals, in bytes. USS (Private_Clean + Private_Dirty + Private_Hugetlb, as
    psutil counts it) is what exiting would free; PSS adds a fair share of shared pages."""

    rss_bytes: int
    pss_bytes: int
    uss_bytes: int
    swap_bytes: int


def parse_rollup(text: str) -> Rollup:
    """Totals from smaps_rollup, or from a whole smaps file: the fields are the same, summed."""
    rss = pss = uss = swap = 0
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if not rest or " " in name:
            continue  # a header line ("7f..-7f.. r--p ... [rollup]") or a blank one
        if name in ("Rss", "Pss", "Swap") or name.startswith("Private_"):
            value = int(rest.split()[0]) * 1024
            if name == "Rss":
                rss += value
            elif name == "Pss":
                pss += value
            elif name == "Swap":
                swap += value
            else:
                uss += value
    return Rollup(rss, pss, uss, swap)


def read_rollup(pid: int | str = "self", proc_root: Path = PROC_ROOT) -> Rollup | None:
    """smaps_rollup (Linux 4.14+: one entry, summed by the kernel), else smaps summed here;
    None where neither can be read (not Linux, another user's process)."""
    for name in ("smaps_rollup", "smaps"):
        try:
            return parse_rollup((proc_root / str(pid) / name).read_text())
        except OSError:
            continue
    return None
