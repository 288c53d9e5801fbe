"""Fixtures for the memory manager's tests. They import the package and nothing else of the
app, so the folder can go wherever the package goes."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "app" / "memory"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
JEMALLOC = "libjemalloc.so.2"
ALLOCATOR_VARIABLES = ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES", "PYTHONMALLOC")


class FakeClock:
    """A monotonic clock the test moves by hand (``clock.now += 5``)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class BlockingTrim:
    """An allocator release that holds until the test lets it go."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def __call__(self) -> bool:
        self.entered.set()
        assert self.go.wait(10), "the test never released the trim"
        return True


def allocator_free_environ() -> dict[str, str]:
    """os.environ without allocator settings, for subprocesses that must start plain."""
    return {k: v for k, v in os.environ.items() if k.upper() not in ALLOCATOR_VARIABLES}


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """The root logger and the package logger as they were: the manager attaches a handler to
    its own logger where nothing would print its lines."""
    package = logging.getLogger("app.memory")
    saved = [(log, log.handlers[:], log.level) for log in (logging.getLogger(), package)]
    yield
    for log, handlers, level in saved:
        log.handlers[:] = handlers
        log.setLevel(level)


def _linker_knows(soname: str) -> bool:
    """Whether the dynamic linker's own cache (`ldconfig -p`) lists the soname."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return any(line.strip().startswith(soname + " ") for line in listing.splitlines())


@pytest.fixture
def jemalloc() -> str:
    """The jemalloc soname; skips where it is not installed, except in CI where that fails."""
    if not _linker_knows(JEMALLOC):
        reason = f"{JEMALLOC} is not installed (Debian/Ubuntu: apt-get install libjemalloc2)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test the jemalloc path: {reason}")
        pytest.skip(reason)
    return JEMALLOC


TCMALLOC = "libtcmalloc_minimal.so.4"
# lab/py314.py's root mounts the checkout at /src and installs jemalloc alone: tcmalloc is
# .ci/run's host package, so only runs on the host must have it.
IN_PY314_ROOT = Path("/src") == REPO


@pytest.fixture
def tcmalloc() -> str:
    """gperftools' tcmalloc soname; skips where it is not installed, except in CI on the host."""
    if not _linker_knows(TCMALLOC):
        reason = (
            f"{TCMALLOC} is not installed (Debian/Ubuntu: apt-get install libtcmalloc-minimal4)"
        )
        if os.environ.get("CI", "").lower() == "true" and not IN_PY314_ROOT:
            pytest.fail(f"CI must test the tcmalloc path: {reason}")
        pytest.skip(reason)
    return TCMALLOC


def has_cpython_mimalloc() -> bool:
    """Whether this interpreter starts with PYTHONMALLOC=mimalloc (3.13 and later bundle it)."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", "pass"],
        env={**os.environ, "PYTHONMALLOC": "mimalloc"},
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture
def cpython_mimalloc() -> None:
    """Skips where this interpreter has no mimalloc of its own (before 3.13, or built without)."""
    if not has_cpython_mimalloc():
        version = ".".join(map(str, sys.version_info[:3]))
        pytest.skip(f"CPython {version} has no PYTHONMALLOC=mimalloc (3.13 and later bundle it)")


def lifted_package(root: Path, main: str) -> Path:
    """A scratch service at ``root``: the memory package copied in as ``svc/memory`` beside
    ``svc/main.py`` with ``main``, as a user lifts it."""
    shutil.copytree(REPO / "app" / "memory", root / "svc" / "memory",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    (root / "svc" / "__init__.py").write_text("")
    (root / "svc" / "main.py").write_text(main)
    return root


def free_port() -> int:
    """A port nothing listens on now, for a server the test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
