"""Where a process's resident memory sits, by kind of mapping, from /proc/<pid>/smaps.

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
