"""One run of the loop benchmark: a setup's server, a probe process and a load process.

Each setup is a checkout served by its own launcher (`python -m app.launch` with the checkout
on PYTHONPATH), as the verifier serves this one: loopback, a free port, a fresh SQLite file,
the default profile, access log off. The load and the probe are processes of their own, so
neither the client's GIL nor its work shows up as the server's stall.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.config import FALLBACK_LIMIT_MB, Settings
from app.profiles import load_profiles
from app.workload.settings import BulkSettings
from lab.loop.figures import Run, Setup
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.local import LocalServer

PATH = "/bulk/sync"
OVERRIDES = {"ACCESS_LOG": "0"}  # no log line per probe
STEP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Load:
    posts: int = 64
    records: int = 3000
    interval_ms: float = 10.0


class SetupServer(LocalServer):
    """The service of ``setup.checkout``, started by that checkout's own launcher."""

    def __init__(self, setup: Setup, workdir: Path, log_path: Path) -> None:
        defaults = Settings.model_fields
        super().__init__(
            load_profiles().get(None).name,
            workdir,
            log_path,
            cleanup_interval_seconds=float(defaults["memory_cleanup_interval"].default),
            cache_ttl_seconds=float(BulkSettings.model_fields["cache_ttl_seconds"].default),
            limit_mb=FALLBACK_LIMIT_MB,
            overrides={**OVERRIDES, **setup.env},
        )
        self.setup = setup

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["PYTHONPATH"] = str(self.setup.checkout.resolve())
        return env


def _child(module: str, *args: object) -> subprocess.Popen[str]:
    """A client process, started and waited on until it says "ready"."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RunNotMade(f"{module} did not start (exit {process.wait()})")
    return process


def _finish(process: subprocess.Popen[str]) -> dict[str, object]:
    """Send the go (or stop) line and read the process's one JSON line."""
    try:
        out, _ = process.communicate("go\n", timeout=STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise RunNotMade("a client process did not finish in time") from None
    if process.returncode != 0 or not out.strip():
        raise RunNotMade(f"a client process failed (exit {process.returncode})")
    found: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return found


def measure(host: str, port: int, load: Load, at_once: int, setup: str, round_: int) -> Run:
    """The load from one process, the probe from another, started before it and stopped after."""
    loader = _child("lab.loop.load", host, port, PATH, load.posts, load.records, at_once)
    try:
        probe = _child("lab.loop.probe", host, port, load.interval_ms)
    except RunNotMade:
        loader.kill()
        raise
    try:
        assert loader.stdin is not None
        loader.stdin.write("go\n")
        loader.stdin.flush()
        loaded = _finish(loader)
        probed = _finish(probe)
    finally:
        for process in (loader, probe):  # a run not made leaves no client behind
            if process.poll() is None:
                process.kill()
                process.wait()
    latencies, statuses, errors = probed["latencies_ms"], loaded["statuses"], loaded["errors"]
    # The children's JSON: a list of numbers and two objects of counts.
    assert isinstance(latencies, list)
    assert isinstance(statuses, dict) and isinstance(errors, dict)
    return Run(
        setup,
        round_,
        at_once,
        [float(v) for v in latencies],
        int(str(probed["errors"])),
        float(str(loaded["seconds"])),
        dict(statuses),
        dict(errors),
    )


def run_setup(
    setup: Setup, round_: int, load: Load, levels: tuple[int, ...], out: Path
) -> list[Run]:
    """A fresh server of ``setup``; each load level in turn against it; the server stopped."""
    with tempfile.TemporaryDirectory(prefix="lean-memory-loop-") as workdir:
        server = SetupServer(setup, Path(workdir), out / f"{setup.name}-{round_}.log")
        try:
            server.start()
            server.wait_healthy(60.0)
            host, _, port = server.base_url.removeprefix("http://").partition(":")
            return [measure(host, int(port), load, n, setup.name, round_) for n in levels]
        finally:
            server.stop()
