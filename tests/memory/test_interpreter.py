"""What the running CPython means for a release: free-threaded builds and the 3.14 GC."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from app.memory import MB, CleanupConfig, MemoryManager, Readers
from app.memory.allocator import Allocator
from app.memory.interpreter import Interpreter, running_interpreter


@pytest.mark.parametrize(
    ("version", "growing"),
    [((3, 13, 9), False), ((3, 14, 0), True), ((3, 14, 4), True), ((3, 14, 5), False),
     ((3, 15, 0), False)],
)
def test_the_growing_gc_is_3_14_0_to_3_14_4(version: tuple[int, int, int], growing: bool) -> None:
    interpreter = Interpreter(version, free_threaded=False)
    assert interpreter.growing_gc is growing
    assert bool(interpreter.warnings()) is growing


def test_free_threaded_releases_cannot_reach_python_objects() -> None:
    interpreter = Interpreter((3, 14, 5), free_threaded=True)
    assert interpreter.release_reaches_python_objects is False
    (line,) = interpreter.warnings()
    assert "not Python's own objects" in line
    assert interpreter.as_dict()["release_reaches_python_objects"] is False


def test_cpython_mimalloc_releases_cannot_reach_python_objects() -> None:
    interpreter = Interpreter(
        (3, 13, 9), False, "mimalloc (CPython's)", {"MIMALLOC_PURGE_DELAY": "0"}
    )
    assert interpreter.release_reaches_python_objects is False
    (line,) = interpreter.warnings()
    assert "a release reaches C allocations only" in line and "(0 ms, as set" in line
    document = interpreter.as_dict()
    assert document["object_allocator"] == "mimalloc (CPython's)"
    assert document["object_allocator_settings"] == {"MIMALLOC_PURGE_DELAY": "0"}


def test_the_object_allocator_is_read_from_cpython_itself() -> None:
    code = (
        "from app.memory.interpreter import running_interpreter as r; i = r(); "
        "print(i.objects, sorted(i.object_settings))"
    )
    for pythonmalloc, expected in (("malloc", "malloc []"), ("pymalloc", "pymalloc []")):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONMALLOC": pythonmalloc, "MIMALLOC_PURGE_DELAY": "0"},
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.strip() == expected  # MIMALLOC_* shown only where mimalloc runs


def test_cpython_mimalloc_is_detected_with_its_settings(cpython_mimalloc: None) -> None:
    code = (
        "from app.memory.interpreter import running_interpreter as r; i = r(); "
        "print(i.objects, dict(i.object_settings), i.release_reaches_python_objects)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONMALLOC": "mimalloc", "MIMALLOC_PURGE_DELAY": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "mimalloc (CPython's) {'MIMALLOC_PURGE_DELAY': '0'} False"


def test_this_interpreter_is_read_as_it_is() -> None:
    here = running_interpreter()
    assert here.version == tuple(sys.version_info[:3])
    assert here.free_threaded is ("t" in getattr(sys, "abiflags", ""))  # e.g. "t" in 3.14t


def test_the_manager_logs_each_warning_at_start(caplog: pytest.LogCaptureFixture) -> None:
    memory = MemoryManager(
        CleanupConfig(enabled=False),
        256 * MB,
        allocator=Allocator("glibc", None, "malloc_trim", lambda: True),
        readers=Readers(rss=lambda: 50 * MB, cgroup=lambda: None),
        interpreter=Interpreter((3, 14, 2), free_threaded=True),
    )
    with caplog.at_level(logging.INFO, logger="app.memory"):
        memory.start()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any("CPython 3.14.2's garbage collector" in w and "3.14.5" in w for w in warnings)
    assert memory.status(detail=False).interpreter.free_threaded is True
