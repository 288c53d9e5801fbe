"""tcmalloc's settings and heap figures, read back from tcmalloc itself (gperftools).

gperftools reads its TCMALLOC_* variables once, at its first allocation, and a value it cannot
parse falls back to the default without a word. So, as with jemalloc's MALLOC_CONF, the settings
that decide what tcmalloc gives back are read from the running allocator and compared with what
the environment asked for: ``MallocExtension_GetNumericProperty`` for the properties
(src/tcmalloc.cc) and ``MallocExtension_GetMemoryReleaseRate`` for the release rate, the one
setting kept as a double. The calls are the C shims of gperftools' malloc_extension_c.h, which
libtcmalloc_minimal exports; the release rate's shim came after gperftools 2.10 (Debian 12's),
so there the rate is shown as the environment gave it, and said to be so.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .measure import HeapUsage

# Environment variable -> the property tcmalloc reports it under (a size_t).
PROPERTIES = {
    "TCMALLOC_AGGRESSIVE_DECOMMIT": "tcmalloc.aggressive_memory_decommit",
    "TCMALLOC_MAX_TOTAL_THREAD_CACHE_BYTES": "tcmalloc.max_total_thread_cache_bytes",
    "TCMALLOC_HEAP_LIMIT_MB": "tcmalloc.heap_limit_mb",
}
RELEASE_RATE = "TCMALLOC_RELEASE_RATE"
# gperftools' StringToBool (src/base/commandlineflags.h) reads only the first character: t, T, y,
# Y, 1 or an empty value are true, anything else false ("perhaps" is false, silently).
TRUE_FIRST = "tTyY1"
UNREADABLE = "(from the environment; this tcmalloc exports no call to read it back)"


@dataclass(frozen=True)
class Tcmalloc:
    """The process's tcmalloc, through its exported C functions."""

    process: ctypes.CDLL

    def property(self, name: str) -> int | None:
        call = self.process.MallocExtension_GetNumericProperty
        call.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
        call.restype = ctypes.c_int
        value = ctypes.c_size_t()
        return value.value if call(name.encode(), ctypes.byref(value)) else None

    def release_rate(self) -> float | None:
        call = getattr(self.process, "MallocExtension_GetMemoryReleaseRate", None)
        if call is None:
            return None
        call.argtypes = []
        call.restype = ctypes.c_double
        return float(call())


def find_tcmalloc() -> Tcmalloc | None:
    """The preloaded tcmalloc's functions, or None where they are not exported."""
    process = ctypes.CDLL(None)  # the global namespace holds the preloaded library's symbols
    if not hasattr(process, "MallocExtension_GetNumericProperty"):
        return None
    return Tcmalloc(process)


def _asked_value(name: str, asked: str) -> str:
    """What tcmalloc should report for the variable as written: booleans as 0 or 1."""
    if name == "TCMALLOC_AGGRESSIVE_DECOMMIT":
        return "1" if asked == "" or asked[0] in TRUE_FIRST else "0"
    return asked.strip()


def options(tcmalloc: Tcmalloc, environ: Mapping[str, str]) -> dict[str, str]:
    """The settings in effect, under their variables' names, as tcmalloc reports them; the
    release rate as the environment gave it where tcmalloc cannot report it."""
    rate = tcmalloc.release_rate()
    found = {}
    if rate is not None:
        found[RELEASE_RATE] = f"{rate:g}"
    elif environ.get(RELEASE_RATE):
        found[RELEASE_RATE] = f"{environ[RELEASE_RATE]} {UNREADABLE}"
    for variable, prop in PROPERTIES.items():
        value = tcmalloc.property(prop)
        if value is not None:
            found[variable] = str(value)
    return found


def not_applied_line(in_effect: Mapping[str, str], environ: Mapping[str, str]) -> str | None:
    """One line naming each TCMALLOC_* variable whose value tcmalloc does not report, or None."""
    failed = []
    for variable, shown in in_effect.items():
        asked = environ.get(variable)
        if asked is None or shown.endswith(UNREADABLE):
            continue
        if variable == RELEASE_RATE:
            try:
                took = float(asked) == float(shown)
            except ValueError:
                took = False
        else:
            took = _asked_value(variable, asked) == shown
        if not took:
            failed.append(f"{variable}={asked!r} (in effect: {shown})")
    if not failed:
        return None
    return f"tcmalloc did not apply {'; '.join(failed)}, and runs without it"


def heap_reader(tcmalloc: Tcmalloc) -> Callable[[], HeapUsage | None]:
    """tcmalloc's blocks in use and its resident pages: the heap less what it has unmapped
    (returned to the kernel, address space only). The keys are jemalloc's, so the holdings split
    reads both the same way."""

    def heap() -> HeapUsage | None:
        allocated = tcmalloc.property("generic.current_allocated_bytes")
        size = tcmalloc.property("generic.heap_size")
        unmapped = tcmalloc.property("tcmalloc.pageheap_unmapped_bytes")
        if allocated is None or size is None or unmapped is None:
            return None
        return HeapUsage(
            "tcmalloc generic.* properties",
            {"allocated_bytes": allocated, "resident_bytes": size - unmapped},
        )

    return heap
