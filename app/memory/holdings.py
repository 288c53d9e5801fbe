"""What a process holds, split by why it is held: live objects, free memory inside the
allocators, file pages. The split says what would help when memory does not come back.

A release can give back only what no live object holds. Memory that stays after a burst is one
of three things, and each has its own remedy:

- **live objects**: blocks the program still holds (pymalloc's blocks in use, and the malloc
  blocks in use: large Python objects, C extensions). A cache, a pool or a leak; no allocator
  setting helps. gc counts the objects; tracemalloc, where the service turned it on, names the
  lines that allocated the most.
- **free memory inside the allocators**: pymalloc's arenas less the blocks in use (an arena goes
  back only when every block in it is free, so a few live small objects pin it), and malloc's
  resident pages less its blocks in use (jemalloc: ``stats.resident - stats.allocated``; glibc:
  the anonymous pages not in pymalloc's arenas or its blocks in use, fragmentation and free
  chunks it has kept). Another allocator setup gives this back.
- **file pages**: mapped code and files; the kernel drops clean ones under pressure.

Under CPython's own mimalloc (PYTHONMALLOC=mimalloc, 3.13 and later) the same report gives
mimalloc's figures instead of pymalloc's: its bytes committed and its blocks in use. They take
pymalloc's place in the split (the ``pymalloc_*`` keys, with ``object_allocator`` saying which);
what mimalloc keeps is its committed pages less its blocks in use, freed pages it has not purged.

Anonymous memory is read from /proc/self/status (``RssAnon``, ``RssFile``, ``RssShmem``: one
small read). pymalloc's figures come from CPython's own ``_PyObject_DebugMallocStats`` written
into memory (``open_memstream``), never to stderr, where other threads log. Reading the split walks
pymalloc's arenas and gc's lists: tens of milliseconds on a large heap, for the status route
(off the event loop), never the request path.
"""

from __future__ import annotations

import ctypes
import gc
import re
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .document import HoldingsDocument
from .measure import MB, HeapUsage

PROC_STATUS = Path("/proc/self/status")
TOP_SITES = 5  # tracemalloc's lines shown, largest first
# The parts, in the order the split shows them; these keys are the document's.
LIVE = "live_objects"
ALLOCATOR_FREE = "allocator_free"
FILE = "file_pages"
PART_NAMES = {
    LIVE: "live objects",
    ALLOCATOR_FREE: "free memory inside the allocators",
    FILE: "file pages",
}


PYMALLOC = "pymalloc"
CPYTHON_MIMALLOC = "mimalloc (CPython's)"  # not a preloaded libmimalloc: Python's objects only
MALLOC = "malloc"  # PYTHONMALLOC=malloc: Python's objects in the process's malloc


@dataclass(frozen=True)
class PymallocUsage:
    """CPython's object allocator's memory and the blocks in use in it, in bytes: pymalloc's
    arenas, or CPython's mimalloc's committed pages."""

    arenas_bytes: int
    allocated_bytes: int
    allocator: str = PYMALLOC

    @property
    def free_bytes(self) -> int:
        return max(self.arenas_bytes - self.allocated_bytes, 0)


@dataclass(frozen=True)
class Site:
    """One line of the service's code and what the blocks it allocated hold now."""

    where: str  # file:line
    size_bytes: int
    blocks: int


@dataclass(frozen=True)
class Traced:
    """tracemalloc's account, where the service traces: every Python allocation it made."""

    current_bytes: int
    top: tuple[Site, ...]


@dataclass(frozen=True)
class Holdings:
    """One reading of the split; a figure the platform or the allocator cannot give is None."""

    anonymous_bytes: int | None  # RssAnon
    file_bytes: int | None  # RssFile + RssShmem
    pymalloc: PymallocUsage | None  # None: not in use (PYTHONMALLOC=malloc), or not readable
    malloc_in_use_bytes: int | None  # the allocator's blocks in use; None: no statistics
    malloc_free_bytes: int | None  # resident in the allocator, in no block in use
    gc_objects: int  # objects gc tracks (containers: lists, dicts, instances)
    traced: Traced | None

    @property
    def live_bytes(self) -> int | None:
        if self.malloc_in_use_bytes is None:
            return None
        return self.malloc_in_use_bytes + (self.pymalloc.allocated_bytes if self.pymalloc else 0)

    @property
    def allocator_free_bytes(self) -> int | None:
        if self.malloc_free_bytes is None:
            return None
        return self.malloc_free_bytes + (self.pymalloc.free_bytes if self.pymalloc else 0)

    def parts(self) -> dict[str, int | None]:
        return {
            LIVE: self.live_bytes,
            ALLOCATOR_FREE: self.allocator_free_bytes,
            FILE: self.file_bytes,
        }

    def as_dict(self) -> HoldingsDocument:
        return {
            "anonymous_bytes": self.anonymous_bytes,
            "file_bytes": self.file_bytes,
            "live_objects_bytes": self.live_bytes,
            "allocator_free_bytes": self.allocator_free_bytes,
            "object_allocator": self.pymalloc.allocator if self.pymalloc else MALLOC,
            "pymalloc_arenas_bytes": self.pymalloc.arenas_bytes if self.pymalloc else None,
            "pymalloc_free_bytes": self.pymalloc.free_bytes if self.pymalloc else None,
            "malloc_in_use_bytes": self.malloc_in_use_bytes,
            "malloc_free_bytes": self.malloc_free_bytes,
            "gc_objects": self.gc_objects,
            "traced_bytes": self.traced.current_bytes if self.traced else None,
            "top_sites": [
                {"where": s.where, "size_bytes": s.size_bytes, "blocks": s.blocks}
                for s in (self.traced.top if self.traced else ())
            ],
        }


def parse_proc_status(text: str) -> tuple[int | None, int | None]:
    """(anonymous, file-backed plus shared) resident bytes from /proc/<pid>/status."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("RssAnon", "RssFile", "RssShmem") and rest.split():
            found[name] = int(rest.split()[0]) * 1024
    anonymous = found.get("RssAnon")
    if "RssFile" not in found:
        return anonymous, None
    return anonymous, found["RssFile"] + found.get("RssShmem", 0)


def read_proc_status(path: Path = PROC_STATUS) -> tuple[int | None, int | None]:
    try:
        return parse_proc_status(path.read_text())
    except OSError:
        return None, None


_ARENAS = re.compile(r"^(\d+) arenas \* \d+ bytes/arena\s*=\s*([\d,]+)", re.MULTILINE)
_ALLOCATED = re.compile(r"^# bytes in allocated blocks\s*=\s*([\d,]+)", re.MULTILINE)


def parse_pymalloc_stats(text: str) -> PymallocUsage | None:
    """Arenas and blocks in use from ``_PyObject_DebugMallocStats``'s report, or None where the
    report has no pymalloc section (another object allocator, a changed format)."""
    arenas, allocated = _ARENAS.search(text), _ALLOCATED.search(text)
    if arenas is None or allocated is None:
        return None
    return PymallocUsage(
        int(arenas.group(2).replace(",", "")), int(allocated.group(1).replace(",", ""))
    )


_MI_COMMITTED = re.compile(r"^\s*Bytes Committed:\s*([\d,]+)", re.MULTILINE)
_MI_ALLOCATED = re.compile(r"^\s*Allocated Bytes:\s*([\d,]+)", re.MULTILINE)


def parse_mimalloc_stats(text: str) -> PymallocUsage | None:
    """Committed pages and blocks in use from CPython's report under its own mimalloc
    (obmalloc.c, py_mimalloc_print_stats), or None where the report has no such section."""
    committed, allocated = _MI_COMMITTED.search(text), _MI_ALLOCATED.search(text)
    if committed is None or allocated is None:
        return None
    return PymallocUsage(
        int(committed.group(1).replace(",", "")),
        int(allocated.group(1).replace(",", "")),
        CPYTHON_MIMALLOC,
    )


def object_allocator(report: str | None) -> str:
    """Which allocator holds Python's objects, from CPython's own report: it reports nothing
    when PYTHONMALLOC=malloc, mimalloc's figures under CPython's mimalloc, else pymalloc's."""
    if report is None:
        return MALLOC
    return CPYTHON_MIMALLOC if _MI_COMMITTED.search(report) else PYMALLOC


def pymalloc_report() -> str | None:
    """CPython's pymalloc report, written into a memory stream; None where pymalloc is not the
    object allocator (the call then reports nothing and returns 0) or the call is not exported."""
    libc = ctypes.CDLL(None)
    stats = getattr(ctypes.pythonapi, "_PyObject_DebugMallocStats", None)
    if stats is None or not hasattr(libc, "open_memstream"):
        return None
    libc.open_memstream.restype = ctypes.c_void_p
    libc.open_memstream.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.free.argtypes = [ctypes.c_void_p]
    stats.argtypes = [ctypes.c_void_p]
    stats.restype = ctypes.c_int
    buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
    stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    if not stream:
        return None
    try:
        used = stats(stream)  # pythonapi holds the GIL for the call, as the function needs
    finally:
        libc.fclose(stream)  # flushes: buffer and size are final only now
    try:
        return ctypes.string_at(buffer, size.value).decode(errors="replace") if used else None
    finally:
        libc.free(buffer)


def read_pymalloc() -> PymallocUsage | None:
    try:
        report = pymalloc_report()
    except (OSError, AttributeError, ValueError):
        return None
    if not report:
        return None
    if object_allocator(report) == CPYTHON_MIMALLOC:
        return parse_mimalloc_stats(report)
    return parse_pymalloc_stats(report)


def malloc_figures(
    heap: HeapUsage | None, anonymous_bytes: int | None, pymalloc: PymallocUsage | None
) -> tuple[int | None, int | None]:
    """(blocks in use, free but resident) of malloc, from the allocator's own account.

    jemalloc says both (``allocated``, ``resident``). glibc says only what is in use
    (mallinfo2's ``uordblks`` and ``hblkhd``); what it keeps is the anonymous memory that is in
    neither pymalloc's arenas (mapped by CPython itself) nor glibc's blocks in use, so thread
    stacks count there too: a few MB at most."""
    if heap is None:
        return None, None
    figures = heap.figures
    if "allocated_bytes" in figures and "resident_bytes" in figures:
        allocated = figures["allocated_bytes"]
        return allocated, max(figures["resident_bytes"] - allocated, 0)
    if "heap_used_bytes" in figures:
        in_use = figures["heap_used_bytes"] + figures.get("mmap_used_bytes", 0)
        if anonymous_bytes is None:
            return in_use, None
        arenas = pymalloc.arenas_bytes if pymalloc else 0
        return in_use, max(anonymous_bytes - arenas - in_use, 0)
    return None, None


def traced(top: int = TOP_SITES) -> Traced | None:
    """tracemalloc's current total and its largest lines, where the service traces
    (PYTHONTRACEMALLOC=1 or tracemalloc.start()); None otherwise: tracing costs, so the split
    never turns it on."""
    if not tracemalloc.is_tracing():
        return None
    current, _ = tracemalloc.get_traced_memory()
    statistics = tracemalloc.take_snapshot().statistics("lineno")[:top]
    sites = tuple(
        Site(f"{s.traceback[0].filename}:{s.traceback[0].lineno}", s.size, s.count)
        for s in statistics
    )
    return Traced(current, sites)


def read_holdings(heap: Callable[[], HeapUsage | None]) -> Holdings:
    """The split now; ``heap`` is the running allocator's own account (allocator.py)."""
    anonymous, file_pages = read_proc_status()
    pymalloc = read_pymalloc()
    usage = heap()
    if pymalloc is not None and pymalloc.allocator == CPYTHON_MIMALLOC:
        return _under_cpython_mimalloc(anonymous, file_pages, pymalloc, usage)
    in_use, free = malloc_figures(usage, anonymous, pymalloc)
    # gc.freeze() (a service may call it after start-up) moves objects out of get_objects()'s
    # view into a permanent generation: they are still live, so they count.
    objects = len(gc.get_objects()) + gc.get_freeze_count()
    return Holdings(anonymous, file_pages, pymalloc, in_use, free, objects, traced())


def _under_cpython_mimalloc(
    anonymous: int | None, file_pages: int | None, mimalloc: PymallocUsage, usage: HeapUsage | None
) -> Holdings:
    """The split where CPython's mimalloc holds Python's objects. Its report counts the main
    thread's heap and the threads that ended, not the threadpool's live heaps (mimalloc merges a
    thread's statistics when it exits), so its pages are taken as what the anonymous memory holds
    beyond malloc's own: its resident pages under jemalloc, its blocks in use under glibc, whose
    kept pages cannot be told from mimalloc's (after the loop's malloc_trim they are few)."""
    in_use, free = malloc_figures(usage, None, None)
    if anonymous is not None and in_use is not None:
        malloc_pages = in_use + (free or 0)
        span = max(anonymous - malloc_pages, mimalloc.arenas_bytes, mimalloc.allocated_bytes)
        mimalloc = PymallocUsage(span, mimalloc.allocated_bytes, CPYTHON_MIMALLOC)
        free = free or 0
    objects = len(gc.get_objects()) + gc.get_freeze_count()
    return Holdings(anonymous, file_pages, mimalloc, in_use, free, objects, traced())


def largest(parts: dict[str, int | None]) -> str | None:
    """The part that holds the most, of those read; None where none was."""
    known = {name: value for name, value in parts.items() if value is not None}
    return max(known, key=lambda name: known[name]) if known else None


def reach_line(
    allocator: str, pymalloc: bool, free_threaded: bool = False, cpython_mimalloc: bool = False
) -> str:
    """What the running allocator setup can give back and what it cannot, in one line (the
    manager logs it at start): the setting decides more than any release call."""
    if free_threaded:
        return (
            f"{allocator} under free-threaded CPython: a release reaches C allocations only; "
            "Python's objects stay in CPython's own mimalloc heaps"
        )
    if cpython_mimalloc:
        return (
            f"{allocator} with CPython's mimalloc for Python's objects: a release reaches what "
            f"{allocator} holds (C extensions, large buffers); mimalloc purges Python's freed "
            "pages itself after MIMALLOC_PURGE_DELAY, when next used, and CPython exports no "
            "call to make it purge sooner"
        )
    if allocator == "glibc" and pymalloc:
        return (
            "glibc with pymalloc: a release returns glibc's free pages and empty pymalloc arenas; "
            "arenas that a few live small objects pin stay; jemalloc preloaded with "
            "PYTHONMALLOC=malloc returns those too"
        )
    if allocator == "glibc":
        return (
            "glibc without pymalloc: a release returns glibc's free pages; free chunks between "
            "live ones stay; jemalloc preloaded returns freed pages on its own"
        )
    if allocator == "jemalloc" and pymalloc:
        return (
            "jemalloc with pymalloc: freed pages go back after jemalloc's decay, or at a purge; "
            "pymalloc arenas that a few live small objects pin stay; PYTHONMALLOC=malloc puts "
            "small objects in jemalloc too"
        )
    if allocator == "jemalloc":
        return (
            "jemalloc without pymalloc: every freed page goes back after jemalloc's decay, or at "
            "a purge; only what live objects hold stays"
        )
    if allocator == "tcmalloc":
        return (
            f"tcmalloc {'with' if pymalloc else 'without'} pymalloc: free spans go back as they "
            "are freed under aggressive decommit, or at a release (ReleaseFreeMemory); its "
            "thread and central caches keep freed small blocks"
            + ("; pymalloc arenas that a few live small objects pin stay" if pymalloc else "")
        )
    return (
        f"{allocator}: released through its own call where it has one; it gives no statistics, "
        "so what stays is not split here"
    )


def help_line(holdings: Holdings, allocator: str) -> str:
    """The largest part of what the process holds beyond its live objects' needs, and what would
    help, in one line: for the status route, where there is no before and after to compare."""
    free = holdings.allocator_free_bytes
    pymalloc_free = holdings.pymalloc.free_bytes if holdings.pymalloc else 0
    mimalloc = holdings.pymalloc is not None and holdings.pymalloc.allocator == CPYTHON_MIMALLOC
    if free is None:
        return reach_line(allocator, holdings.pymalloc is not None, cpython_mimalloc=mimalloc)
    said = f"{free / MB:.1f} MB free inside the allocators"
    if mimalloc and pymalloc_free * 2 >= free:
        return (
            f"{said}, most in CPython's mimalloc, which no call from Python returns "
            "(MIMALLOC_PURGE_DELAY=0 only hastens what it purges itself): PYTHONMALLOC=malloc "
            "with jemalloc preloaded would return it"
        )
    if holdings.pymalloc is not None and pymalloc_free * 2 >= free:
        return (
            f"{said}, most in pymalloc arenas that live small objects pin: "
            "PYTHONMALLOC=malloc with jemalloc preloaded would return it"
        )
    if allocator == "glibc":
        return f"{said}, most in glibc's heaps: jemalloc preloaded would return it on its own"
    return f"{said}: a purge (the cleanup loop's release) or a shorter decay returns it"
