"""Fixtures for the app package's tests: a clean environment, fixture trees, a served app."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings, load_settings
from app.frame import Frame
from app.main import create_app, workloads

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "memory" / "fixtures"  # the cgroup and /proc trees
JEMALLOC = "libjemalloc.so.2"

# The mounted workloads' settings fields (the reference workload's, unless it was removed).
WORKLOAD_FIELDS = {name for w in workloads() for name in w.settings_type.model_fields}
# Every variable the service reads, so a developer's shell or CI job cannot leak into a test.
SERVICE_VARIABLES = [
    *(name.upper() for name in Settings.model_fields),
    *(name.upper() for name in WORKLOAD_FIELDS),
    "MEMORY_PROFILES_FILE",
    "RAILWAY_REPLICA_ID",
]


def service_free_environ() -> dict[str, str]:
    """os.environ without the service's variables or allocator settings, for subprocesses."""
    drop = {*SERVICE_VARIABLES, "LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES", "PYTHONMALLOC"}
    return {k: v for k, v in os.environ.items() if k.upper() not in drop}


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No service variable from the outer environment and no `.env` from the repo; logging and
    os.environ as they were afterwards (create_app reconfigures the root logger, launch.main
    writes the profile's variables into os.environ)."""
    for name in SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    environ = dict(os.environ)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)


def linker_cache() -> dict[str, str]:
    """soname -> path from the dynamic linker's own cache (`ldconfig -p`), not the code under
    test; empty where ldconfig is missing."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
    except OSError:
        return {}
    entries: dict[str, str] = {}
    for line in listing.splitlines()[1:]:
        name, _, path = line.strip().partition(" => ")
        if path:
            entries.setdefault(name.split(" (")[0], path)
    return entries


def jemalloc_installed() -> bool:
    return JEMALLOC in linker_cache()


@pytest.fixture
def jemalloc() -> str:
    """The jemalloc soname; skips where it is not installed, except in CI where that fails."""
    if not jemalloc_installed():
        reason = f"{JEMALLOC} is not installed (Debian/Ubuntu: apt-get install libjemalloc2)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test the jemalloc path: {reason}")
        pytest.skip(reason)
    return JEMALLOC


@pytest.fixture
def token() -> str:
    return secrets.token_hex(16)


def frame(app: object) -> Frame:
    """The frame of an app built by create_app (its memory manager, settings, registry)."""
    found = app.state.frame  # type: ignore[attr-defined]  # a FastAPI app, typed as object
    assert isinstance(found, Frame)
    return found


@pytest.fixture
def make_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Settings]:
    """The frame's Settings with a fresh database under tmp_path; keyword arguments override.
    The workload reads its own settings from the environment when it is mounted, so overrides
    of those (max_bulk_records=...) are set there, as an operator would set them."""

    def make(**overrides: object) -> Settings:
        # The app budgets memory from its own start RSS, and here that process is pytest, whose
        # RSS grows with the suite: a limit far above it keeps the budget out of tests that are
        # not about it.
        values: dict[str, object] = {
            "database_path": str(tmp_path / "db.sqlite"),
            "memory_limit_mb": 8192,
        }
        values.update(overrides)
        for name in [name for name in values if name in WORKLOAD_FIELDS]:
            monkeypatch.setenv(name.upper(), str(values.pop(name)))
        return load_settings(**values)

    return make


@pytest.fixture
def serve(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[..., TestClient]]:
    """Start the app (lifespan and cleanup loop included) with settings overrides."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: object) -> TestClient:
            app = create_app(make_settings(**overrides))
            # create_app's logging setup replaces the root handlers, caplog's among them.
            logging.getLogger().addHandler(caplog.handler)
            return stack.enter_context(TestClient(app))

        yield start
