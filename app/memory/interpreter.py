"""What the running CPython means for releasing memory.

Two builds change what a release can reach or how memory grows:
- free-threaded CPython keeps every Python object in its own mimalloc heaps, so malloc_trim or a
  jemalloc purge reaches only C-level allocations (and it refuses PYTHONMALLOC=malloc at start);
- CPython 3.14.0 to 3.14.4 shipped an incremental garbage collector that grew memory in
  production (python/cpython#142516); 3.14.5 went back to the 3.13 collector.
"""

from __future__ import annotations

import sys
import sysconfig
from dataclasses import dataclass

from .document import InterpreterDocument

GC_FIXED_IN = (3, 14, 5)


@dataclass(frozen=True)
class Interpreter:
    version: tuple[int, int, int]
    free_threaded: bool

    @property
    def release_reaches_python_objects(self) -> bool:
        return not self.free_threaded

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
            "release_reaches_python_objects": self.release_reaches_python_objects,
        }


def running_interpreter() -> Interpreter:
    free = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    version = sys.version_info
    return Interpreter((version.major, version.minor, version.micro), free)
