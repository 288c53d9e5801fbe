"""Which malloc is really running, with which settings, and how to ask it to give free memory back.

Detection reads /proc/self/maps rather than trusting LD_PRELOAD: the dynamic linker only warns
when a preload is missing, so a variable says what was asked for, the mappings what was loaded.
For the same reason jemalloc's options are read back from jemalloc (jemalloc_conf.py) rather
than taken from MALLOC_CONF.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from .jemalloc_conf import (
    check_options,
    mallctl_reader,
    not_applied_line,
    options_in_effect,
    parse_malloc_conf,
)
from .measure import HeapUsage, glibc_heap
from .tcmalloc_conf import find_tcmalloc, heap_reader
from .tcmalloc_conf import not_applied_line as tcmalloc_not_applied
from .tcmalloc_conf import options as tcmalloc_options

log = logging.getLogger(__name__)

MAPS = Path("/proc/self/maps")
# jemalloc's MALLCTL_ARENAS_ALL: "arena.4096.purge" purges every arena.
JEMALLOC_PURGE_ALL = b"arena.4096.purge"
# jemalloc's totals (size_t, bytes), refreshed by writing "epoch" (uint64_t) first.
JEMALLOC_STATS = ("allocated", "active", "resident", "mapped", "retained")
# glibc's malloc settings from the environment (glibc's tunables and their older aliases). glibc
# gives no call that reads them back (mallopt only sets); it reads them once, at its first
# allocation, from the same environment this process started with, so that is what is shown.
GLIBC_VARIABLES = (
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_",
)
GLIBC_NOTE = "(from the environment glibc read at start; glibc cannot report it back)"
PRELOADED = {  # library name fragment -> allocator name
    "libjemalloc": "jemalloc",
    "libtcmalloc": "tcmalloc",
    "libmimalloc": "mimalloc",
}


class _Settings(TypedDict, total=False):
    options: Mapping[str, str]
    not_applied: str | None
    heap: Callable[[], HeapUsage | None]


class ReleaseUnavailable(RuntimeError):
    """The allocator's release call cannot be made here (library or symbol missing)."""


@dataclass(frozen=True)
class Allocator:
    """The running allocator. ``release`` returns True if the allocator reports having freed
    memory, False if it had nothing to give back; it raises on failure."""

    name: str
    library: str | None
    method: str  # what the release log shows: malloc_trim, jemalloc_purge, ..., or none
    release: Callable[[], bool] | None = field(default=None, compare=False, repr=False)
    # The allocator's options as it reports them (jemalloc: opt.<name>, plus "version").
    options: Mapping[str, str] = field(default_factory=dict, compare=False)
    # One line when settings the process was started with did not take: a deployment error.
    not_applied: str | None = field(default=None, compare=False)
    # The allocator's own account of its heap; None where it gives none.
    heap: Callable[[], HeapUsage | None] | None = field(default=None, compare=False, repr=False)

    def heap_usage(self) -> HeapUsage | None:
        """The heap figures, or None where there are none or reading them failed: a debug
        page must not fail because the allocator would not answer."""
        try:
            return self.heap() if self.heap is not None else None
        except (OSError, ValueError):
            return None


def mapped_allocator(maps_text: str) -> tuple[str, str] | None:
    """(allocator name, library path) of a replacement malloc in a maps listing, if any."""
    for line in maps_text.splitlines():
        path = line.split(None, 5)[5].strip() if len(line.split(None, 5)) > 5 else ""
        base = path.rsplit("/", 1)[-1]
        for fragment, name in PRELOADED.items():
            if base.startswith(fragment):
                return name, path
    return None


def _glibc_trim() -> Callable[[], bool]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError) as exc:
        raise ReleaseUnavailable(f"malloc_trim not found: {exc}") from exc
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    # ctypes drops the GIL for the call: a trim in a worker thread leaves the event loop running.
    def release() -> bool:
        return bool(trim(0))

    return release


def _mallctl() -> Callable[..., int]:
    process = ctypes.CDLL(None)  # the global namespace holds the preloaded library's symbols
    for symbol in ("mallctl", "je_mallctl"):
        mallctl = getattr(process, symbol, None)
        if mallctl is not None:
            break
    else:
        raise ReleaseUnavailable("jemalloc is mapped but mallctl is not exported")
    mallctl.argtypes = [
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
    ]
    mallctl.restype = ctypes.c_int
    call: Callable[..., int] = mallctl  # ctypes functions are untyped: this is its signature
    return call


def _jemalloc_purge() -> Callable[[], bool]:
    mallctl = _mallctl()

    def release() -> bool:
        status = mallctl(JEMALLOC_PURGE_ALL, None, None, None, 0)
        if status != 0:
            raise OSError(status, f"mallctl(arena.4096.purge) returned {status}")
        return True

    return release


def _jemalloc_version(mallctl: Callable[..., int]) -> str:
    value = ctypes.c_char_p()
    size = ctypes.c_size_t(ctypes.sizeof(value))
    if mallctl(b"version", ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
        return "(version unknown)"
    return (value.value or b"").decode(errors="replace").split("-", 1)[0]


def _jemalloc_heap(mallctl: Callable[..., int]) -> Callable[[], HeapUsage | None]:
    def heap() -> HeapUsage | None:
        epoch = ctypes.c_uint64(1)  # jemalloc caches its totals until the epoch advances
        mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))
        figures: dict[str, int] = {}
        for name in JEMALLOC_STATS:
            value = ctypes.c_size_t()
            size = ctypes.c_size_t(ctypes.sizeof(value))
            if mallctl(f"stats.{name}".encode(), ctypes.byref(value), ctypes.byref(size), None, 0):
                return None  # a build without statistics
            figures[f"{name}_bytes"] = value.value
        return HeapUsage("jemalloc stats.*", figures)

    return heap


def _jemalloc_settings(environ: Mapping[str, str]) -> _Settings:
    """jemalloc's options as it reports them, and the line saying which asked-for ones did not
    take: compared with MALLOC_CONF as this process got it."""
    try:
        mallctl = _mallctl()
    except ReleaseUnavailable:
        return {}
    read = mallctl_reader(mallctl)
    version = _jemalloc_version(mallctl)
    checks = check_options(parse_malloc_conf(environ.get("MALLOC_CONF", "")), read)
    return {
        "options": {"version": version, **options_in_effect(checks, read)},
        "not_applied": not_applied_line(checks, version, environ),
        "heap": _jemalloc_heap(mallctl),
    }


def _tcmalloc_settings(environ: Mapping[str, str]) -> _Settings:
    """tcmalloc's release settings as it reports them, and the line naming any TCMALLOC_*
    variable it did not apply."""
    tcmalloc = find_tcmalloc()
    if tcmalloc is None:
        return {}
    found = tcmalloc_options(tcmalloc, environ)
    return {
        "options": found,
        "not_applied": tcmalloc_not_applied(found, environ),
        "heap": heap_reader(tcmalloc),
    }


def glibc_options(environ: Mapping[str, str]) -> dict[str, str]:
    """glibc's malloc variables that are set, each marked as read from the environment."""
    found = {}
    for name in GLIBC_VARIABLES:
        value = environ.get(name)
        if name == "GLIBC_TUNABLES" and value:
            value = ":".join(t for t in value.split(":") if t.startswith("glibc.malloc.")) or None
        if value:
            found[name] = f"{value} {GLIBC_NOTE}"
    return found


def _named_call(symbol: str, *args: int) -> Callable[[], bool]:
    fn = getattr(ctypes.CDLL(None), symbol, None)
    if fn is None:
        raise ReleaseUnavailable(f"{symbol} is not exported")

    def release() -> bool:
        fn(*args)
        return True

    return release


RELEASERS: dict[str, tuple[str, Callable[[], Callable[[], bool]]]] = {
    "glibc": ("malloc_trim", _glibc_trim),
    "jemalloc": ("jemalloc_purge", _jemalloc_purge),
    "tcmalloc": ("tcmalloc_release", lambda: _named_call("MallocExtension_ReleaseFreeMemory")),
    "mimalloc": ("mi_collect", lambda: _named_call("mi_collect", 1)),
}


def _identify(maps: Path) -> tuple[str, str | None]:
    if not sys.platform.startswith("linux"):
        return f"non-linux ({platform.system().lower()})", None
    try:
        found = mapped_allocator(maps.read_text())
    except OSError:
        found = None
    if found is not None:
        return found
    libc, _ = platform.libc_ver()
    return ("glibc", None) if libc == "glibc" else (libc or "unknown", None)


def _settings(name: str, environ: Mapping[str, str]) -> _Settings:
    if name == "jemalloc":
        return _jemalloc_settings(environ)
    if name == "tcmalloc":
        return _tcmalloc_settings(environ)
    if name == "glibc":
        return {"options": glibc_options(environ), "heap": glibc_heap}
    return {}


def detect_allocator(maps: Path = MAPS, environ: Mapping[str, str] | None = None) -> Allocator:
    """The allocator, its settings in effect and its release call; ``release`` is None (GC
    only) where there is none. ``environ`` is what the process was started with."""
    name, library = _identify(maps)
    settings = _settings(name, os.environ if environ is None else environ)
    method, factory = RELEASERS.get(name, ("none", None))
    if factory is None:
        return Allocator(name, library, "none", **settings)
    try:
        return Allocator(name, library, method, factory(), **settings)
    except (OSError, ReleaseUnavailable) as exc:
        log.warning("[memory] %s detected but its release call is unavailable: %s", name, exc)
        return Allocator(name, library, "none", **settings)
