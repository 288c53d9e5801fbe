"""Which malloc is really running, and how to ask it to give free memory back.

Detection reads /proc/self/maps rather than trusting LD_PRELOAD: the dynamic linker only warns
when a preload is missing, so a variable says what was asked for, the mappings what was loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MAPS = Path("/proc/self/maps")
# jemalloc's MALLCTL_ARENAS_ALL: "arena.4096.purge" purges every arena.
JEMALLOC_PURGE_ALL = b"arena.4096.purge"
PRELOADED = {  # library name fragment -> allocator name
    "libjemalloc": "jemalloc",
    "libtcmalloc": "tcmalloc",
    "libmimalloc": "mimalloc",
}


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


def _jemalloc_purge() -> Callable[[], bool]:
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

    def release() -> bool:
        status = mallctl(JEMALLOC_PURGE_ALL, None, None, None, 0)
        if status != 0:
            raise OSError(status, f"mallctl(arena.4096.purge) returned {status}")
        return True

    return release


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


def detect_allocator(maps: Path = MAPS) -> Allocator:
    """The allocator and its release call; ``release`` is None (GC only) where there is none."""
    name, library = _identify(maps)
    method, factory = RELEASERS.get(name, ("none", None))
    if factory is None:
        return Allocator(name, library, "none")
    try:
        return Allocator(name, library, method, factory())
    except (OSError, ReleaseUnavailable) as exc:
        log.warning("[memory] %s detected but its release call is unavailable: %s", name, exc)
        return Allocator(name, library, "none")
