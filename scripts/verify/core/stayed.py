"""Where the memory that stayed after the load sits, and what would help, in one line.

The verdict says whether memory came back; this says why not. The service's split (live
objects, free memory inside the allocators, file pages: app/memory/holdings.py) is read twice,
at the end of the baseline and at the end of the idle window, and the difference is what the
load left behind. Each part has its own remedy, so the line names the part that grew most:

- free memory inside the allocators: another allocator setup returns it, and `verify compare
  --command` measures which, on the user's own service;
- live objects: no setting helps; a leak or an unbounded cache, named by tracemalloc's top line
  where the service traces;
- file pages: the kernel drops clean ones under pressure; nothing to release.

Read from the status route where the service has one; otherwise /proc gives only anonymous
against file-backed pages, and the line says how to see inside the anonymous part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.memory.document import StatusDocument
from app.memory.holdings import ALLOCATOR_FREE, FILE, LIVE, PART_NAMES, parse_proc_status
from app.memory.measure import MB

UNSPLIT = "anonymous"  # /proc alone: anonymous pages, not split further
NAMES = {**PART_NAMES, UNSPLIT: "anonymous memory (not split: no status route)"}
# Below the larger of these a part's growth is noise beside the spike, not a cause worth a
# remedy: a few MB of allocator metadata and caches, or a small share of what the load raised.
MIN_STAYED_BYTES = 4 * MB
MIN_STAYED_SHARE = 0.2
# A part that grows this much every soak cycle reaches any limit: worth its remedy.
MIN_CYCLE_GROWTH_BYTES = 2 * MB
# The profile that leaves nothing pinned in pymalloc's arenas and returns freed pages itself.
FREEING_PROFILE = "jemalloc-nopymalloc"


@dataclass(frozen=True)
class Split:
    """One reading of what a service holds, by part, in bytes; None where not read."""

    source: str  # "status route" (one worker's) or "/proc" (every process's)
    pid: int | None  # the worker the status route answered from
    live_bytes: int | None
    allocator_free_bytes: int | None
    pymalloc_free_bytes: int | None
    file_bytes: int | None
    anonymous_bytes: int | None
    allocator: str | None
    gc_objects: int | None
    top_sites: tuple[str, ...] = ()  # tracemalloc's largest lines: "file:line 12.0 MB"
    # What holds Python's objects where not malloc: pymalloc, or CPython's own mimalloc.
    object_allocator: str = "pymalloc"

    def parts(self) -> dict[str, int | None]:
        if self.source == "/proc":
            return {UNSPLIT: self.anonymous_bytes, FILE: self.file_bytes}
        return {
            LIVE: self.live_bytes,
            ALLOCATOR_FREE: self.allocator_free_bytes,
            FILE: self.file_bytes,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "top_sites": list(self.top_sites)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Split:
        return cls(**{**data, "top_sites": tuple(data.get("top_sites") or ())})


def split_from_status(document: StatusDocument | None) -> Split | None:
    """The service's own split, from its status route; None where the route has none (no route,
    or a package from before the split)."""
    held = document.get("holdings") if document else None
    if document is None or not held:
        return None
    sites = tuple(
        f"{site['where']} {site['size_bytes'] / MB:.1f} MB" for site in held.get("top_sites", [])
    )
    return Split(
        source="status route",
        pid=document["pid"],
        live_bytes=held["live_objects_bytes"],
        allocator_free_bytes=held["allocator_free_bytes"],
        pymalloc_free_bytes=held["pymalloc_free_bytes"],
        file_bytes=held["file_bytes"],
        anonymous_bytes=held["anonymous_bytes"],
        allocator=document["allocator"]["name"],
        gc_objects=held["gc_objects"],
        top_sites=sites,
        object_allocator=held.get("object_allocator") or "pymalloc",
    )


def split_from_proc(pids: Iterable[int], proc_root: Path = Path("/proc")) -> Split | None:
    """Anonymous and file-backed pages summed over the service's processes; None where none
    could be read (gone, or another user's)."""
    anonymous = file_pages = 0
    read = False
    for pid in pids:
        try:
            anon, files = parse_proc_status((proc_root / str(pid) / "status").read_text())
        except OSError:
            continue
        if anon is None or files is None:
            continue
        anonymous, file_pages, read = anonymous + anon, file_pages + files, True
    if not read:
        return None
    return Split("/proc", None, None, None, None, file_pages, anonymous, None, None)


def read_split(
    status: Callable[[], StatusDocument | None], pids: Callable[[], list[int]]
) -> Split | None:
    """The status route's split where the service has one, else /proc's."""
    return split_from_status(status()) or split_from_proc(pids())


@dataclass(frozen=True)
class Stayed:
    """What the load left behind: the split at the end of the idle window less the split at the
    end of the baseline, part by part."""

    before: Split
    after: Split

    def grew(self) -> dict[str, int]:
        before = self.before.parts()
        return {
            name: value - before_value
            for name, value in self.after.parts().items()
            if value is not None and (before_value := before.get(name)) is not None
        }

    def line(self, spike_bytes: int = 0) -> str:
        """What stayed, by part, and what would help, in one line; a remedy only for a part that
        grew by more than noise beside ``spike_bytes`` (what the load raised memory by)."""
        grew = self.grew()
        shown = ", ".join(f"{NAMES[name]} {_signed_mb(value)}" for name, value in grew.items())
        said = f"what stayed ({self.after.source}): {shown}" if shown else "what stayed: not read"
        cause = max(grew, key=lambda name: grew[name]) if grew else None
        floor = max(MIN_STAYED_BYTES, MIN_STAYED_SHARE * spike_bytes)
        if cause is None or grew[cause] < floor:
            return f"{said}; nothing worth a remedy stayed"
        return f"{said}; {self.remedy(cause, grew[cause])}"

    def remedy(self, cause: str, grown: int, cycles: int | None = None) -> str:
        """The remedy for ``cause``, which grew by ``grown`` bytes: in all, or a cycle on average
        over ``cycles`` soak cycles."""
        after = self.after
        if cause == ALLOCATOR_FREE:
            where = _free_where(self.before, after)
            if where == "jemalloc":
                return (
                    "most of it is free memory inside jemalloc, in slabs still partly in use or "
                    "pages not yet purged: a purge returns the latter (the cleanup loop's "
                    "release), or a shorter dirty_decay_ms"
                )
            return (
                f"most of it is free memory inside {where}: try the {FREEING_PROFILE} profile "
                "(`verify compare --command`)"
            )
        if cause == LIVE:
            objects = _gc_growth(self.before, after, cycles or 1)
            per = " a cycle" if cycles else ""
            site = (
                f"top site {after.top_sites[0]}"
                if after.top_sites
                else "PYTHONTRACEMALLOC=1 on the service names the lines"
            )
            return (
                f"live objects grew {grown / MB:.1f} MB{per}{objects}: "
                f"a leak or an unbounded cache; {site}"
            )
        if cause == FILE:
            return "most of it is file pages, which the kernel drops under pressure: nothing to do"
        return (
            "mount the memory package's status route (docs/lift-out.md) to split the anonymous "
            "part into live objects and free memory inside the allocators"
        )


def _signed_mb(value: int) -> str:
    return f"{value / MB:+.1f} MB"


def _free_where(before: Split, after: Split) -> str:
    """Which allocator the free part grew in: pymalloc's arenas, malloc's pages, or both."""
    pymalloc = _growth(before.pymalloc_free_bytes, after.pymalloc_free_bytes)
    total = _growth(before.allocator_free_bytes, after.allocator_free_bytes)
    malloc = total - pymalloc
    name = after.allocator or "the allocator"
    objects = after.object_allocator
    if after.pymalloc_free_bytes is None or pymalloc * 2 <= malloc:
        return name
    return objects if malloc * 2 <= pymalloc else f"{name} and {objects}"


def _growth(before: int | None, after: int | None) -> int:
    return (after or 0) - (before or 0)


def _gc_growth(before: Split, after: Split, cycles: int) -> str:
    if before.gc_objects is None or after.gc_objects is None:
        return ""
    return f" ({(after.gc_objects - before.gc_objects) // cycles:+,} objects gc tracks)"


def stayed_line(before: Split | None, after: Split | None, spike_bytes: int = 0) -> str | None:
    """The line for a run, or None where a reading is missing. Two status-route readings from
    different workers are not one worker's growth: then none."""
    if before is None or after is None or before.source != after.source:
        return None
    if before.pid != after.pid:
        return None
    return Stayed(before, after).line(spike_bytes)


def across_cycles(splits: Sequence[Split | None]) -> str | None:
    """What each soak cycle left behind on average, from the first cycle's idle end to the
    last's, part by part, with the remedy for the part that grew most: a part that grows every
    cycle is the one that will reach the limit. None with fewer than two comparable readings."""
    read = [s for s in splits if s is not None]
    if len(read) < 2:
        return None
    first, last = read[0], read[-1]
    if first.source != last.source or first.pid != last.pid:
        return None
    cycles = len(read) - 1
    stayed = Stayed(first, last)
    grew = {name: value // cycles for name, value in stayed.grew().items()}
    shown = ", ".join(f"{NAMES[name]} {_signed_mb(value)}" for name, value in grew.items())
    said = f"a cycle, from the first idle end to the last ({last.source}): {shown}"
    cause = max(grew, key=lambda name: grew[name]) if grew else None
    if cause is None or grew[cause] < MIN_CYCLE_GROWTH_BYTES:
        return f"{said}; no part grows from cycle to cycle"
    return f"{said}; {stayed.remedy(cause, grew[cause], cycles)}"
