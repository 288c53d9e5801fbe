"""What the running CPython means for releasing memory.

Two builds change what a release can reach or how memory grows:
- free-threaded CPython keeps every Python object in its own mimalloc heaps, so malloc_trim or a
  jemalloc purge reaches only C-level allocations (and it refuses PYTHONMALLOC=malloc at start);
- CPython's own mimalloc (PYTHONMALLOC=mimalloc, 3.13 and later, and every free-threaded build)
  holds Python's objects apart from malloc: no malloc release reaches them, and CPython exports
  no mimalloc call (mi_collect is internal to libpython). mimalloc reads its MIMALLOC_* options
  from the environment at start (its options.c) and offers no way to read them back from Python,
  so they are shown as the environment gave them;
- CPython 3.14.0 to 3.14.4 shipped an incremental garbage collector that grew memory in
  production (python/cpython#142516); 3.14.5 went back to the 3.13 collector.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field

from .document import InterpreterDocument
from .holdings import CPYTHON_MIMALLOC, PYMALLOC, object_allocator, pymalloc_report

GC_FIXED_IN = (3, 14, 5)


@dataclass(frozen=True)
class Interpreter:
    version: tuple[int, int, int]
    free_threaded: bool
    objects: str = PYMALLOC  # the allocator of Python's objects (holdings.object_allocator)
    # MIMALLOC_* as the environment gave them, under CPython's mimalloc only.
    object_settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def release_reaches_python_objects(self) -> bool:
        return not self.free_threaded and self.objects != CPYTHON_MIMALLOC

    @property
    def growing_gc(self) -> bool:
        return (3, 14, 0) <= self.version < GC_FIXED_IN

    def warnings(self) -> list[str]:
        """One line per property of this build that limits what the manager can do."""
        found = []
        if self.free_threaded:
            found.append(
                "free-threaded CPython keeps Python's objects in its own mimalloc heaps: a trim "
                "or a purge reaches only C-level allocations, not Python's own objects"
            )
        elif self.objects == CPYTHON_MIMALLOC:
            found.append(
                "CPython's mimalloc holds Python's objects: a release reaches C allocations only; "
                "mimalloc purges freed pages itself after MIMALLOC_PURGE_DELAY"
                + (
                    f" ({self.object_settings['MIMALLOC_PURGE_DELAY']} ms, as set; CPython "
                    "cannot report it back)"
                    if "MIMALLOC_PURGE_DELAY" in self.object_settings
                    else " (10 ms, mimalloc's default)"
                )
            )
        if self.growing_gc:
            version = ".".join(map(str, self.version))
            found.append(
                f"CPython {version}'s garbage collector grows memory under load; "
                "3.14.5 fixed it: upgrade"
            )
        return found

    def as_dict(self) -> InterpreterDocument:
        return {
            "version": ".".join(map(str, self.version)),
            "free_threaded": self.free_threaded,
            "object_allocator": self.objects,
            "object_allocator_settings": dict(self.object_settings),
            "release_reaches_python_objects": self.release_reaches_python_objects,
        }


def running_objects() -> str:
    """The allocator of Python's objects, from CPython's own report of it."""
    try:
        return object_allocator(pymalloc_report())
    except (OSError, AttributeError, ValueError):
        return PYMALLOC


def running_interpreter(environ: Mapping[str, str] | None = None) -> Interpreter:
    environ = os.environ if environ is None else environ
    free = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    version = sys.version_info
    objects = running_objects()
    settings = {
        name: value
        for name, value in environ.items()
        if name.startswith("MIMALLOC_") and objects == CPYTHON_MIMALLOC
    }
    return Interpreter((version.major, version.minor, version.micro), free, objects, settings)
