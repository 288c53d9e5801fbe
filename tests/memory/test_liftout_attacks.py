"""Qualys's `slowhttptest` against the lifted package under each server users run, inside a real
500 MB memory cgroup: slow bodies (-B), slow readers (-X) and slowloris headers (-H), one after
another on one server process, so a server costs one start and three short attacks.

The project is the one `test_liftout.py` makes from the README's snippet, plus two routes of the
kind the attacks aim at: one that reads its body and one with an 8 MB reply. None of this
service's own protocol (app/edge) is in it: what holds is the package at the ASGI level and the
server itself. After each attack the server must still be running, the cgroup must never have hit
its limit (v1 `memory.failcnt`, v2 `memory.events` max) nor OOM-killed anything, and /healthz must
have answered during the attack (probed from a process of its own) and after it.

Needs root and a memory controller for the cgroup, and Debian's `slowhttptest`; in CI both are
required.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.verify.core.cgroup_limit import MemoryCgroup
from scripts.verify.core.errors import RunNotMade
from scripts.verify.overload.slowread import HealthProbe
from tests.conftest import RunSummary
from tests.memory.conftest import allocator_free_environ
from tests.memory.test_liftout import Served, free_port, make_project

MB = 1024 * 1024
SECONDS = 15  # each attack; the three together stay under a minute per server
# The share of /healthz probes an attack must leave answered (the service alive for others).
# Not 95%: in CI, beside three busy workers, Granian under slowloris once answered 37 of 39
# probes; what this test guards is a server that stops answering, not a probe or two late.
MIN_HEALTH_SHARE = 0.9
AFTER_SECONDS = 10
# What the attacks aim at, added to the README's example: a route that reads its body, and one
# whose reply is many of the package's slices (a stored value, shared by every reader).
TARGETS = """

import os

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

REPORT = os.urandom(8 * 1024 * 1024)


async def upload(request: Request) -> dict[str, int]:
    try:
        return {"bytes": len(await request.body())}
    except ClientDisconnect:  # a sender that left: nothing to answer, not an error
        return {"bytes": 0}


def report() -> Response:
    return Response(REPORT, media_type="application/octet-stream")


app.add_api_route("/upload", upload, methods=["POST"], tags=["work"])
app.add_api_route("/report", report, tags=["work"])
"""
# One worker each, so every attack meets the worker that answers the probes.
# fmt: off
SERVERS = {
    "uvicorn-h11": ["uvicorn", "svc.main:app", "--host", "127.0.0.1", "--port", "{port}",
                    "--http", "h11"],
    "uvicorn-httptools": ["uvicorn", "svc.main:app", "--host", "127.0.0.1", "--port", "{port}",
                          "--http", "httptools"],
    "fastapi-run": ["fastapi", "run", "svc/main.py", "--host", "127.0.0.1", "--port", "{port}"],
    "gunicorn-uvicorn-worker": ["gunicorn", "svc.main:app", "-k", "uvicorn_worker.UvicornWorker",
                                "-w", "1", "-b", "127.0.0.1:{port}"],
    "gunicorn-asgi": ["gunicorn", "svc.main:app", "-k", "asgi", "-w", "1",
                      "-b", "127.0.0.1:{port}"],
    "granian": ["granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}",
                "--workers", "1", "svc.main:app"],
}
ATTACKS = {
    # 1000 bodies of 8 MB declared, 10 bytes every 10 s each.
    "slow-body": ["-B", "-c", "1000", "-r", "200", "-i", "10", "-s", "8000000", "-t", "POST",
                  "-f", "application/octet-stream", "-u", "{base}/upload"],
    # 200 readers of the 8 MB reply, two pipelined each, a 16-64 byte window read every 5 s.
    "slow-read": ["-X", "-c", "200", "-r", "100", "-n", "1", "-z", "5", "-w", "16", "-y", "64",
                  "-k", "2", "-u", "{base}/report"],
    # 1500 connections sending a header line every 10 s, never ending the head.
    "slowloris": ["-H", "-c", "1500", "-r", "300", "-i", "10", "-u", "{base}/healthz"],
}
# fmt: on


def required(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the lifted package's attack tests: {reason}")
    pytest.skip(reason)


@dataclass
class Limited:
    """A server started in a session of its own inside a fresh memory cgroup."""

    served: Served
    cgroup: MemoryCgroup

    def stop(self) -> None:
        """The whole session: Granian's and gunicorn's workers outlive a killed parent."""
        process = self.served.process
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.cgroup.remove()


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[object]:
    started: list[Limited] = []

    def start(name: str) -> Limited:
        try:
            cgroup = MemoryCgroup(500).create()
        except RunNotMade as exc:
            required(str(exc))
            raise
        project = make_project(tmp_path / "project")
        with (project / "svc" / "main.py").open("a") as main:
            main.write(TARGETS)
        port = free_port()
        module, *args = SERVERS[name]
        argv = [sys.executable, "-m", module, *(a.format(port=port) for a in args)]
        log_path = project / f"{name}.log"
        environ = {**allocator_free_environ(), "PYTHONPATH": str(project)}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=project, env=environ, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=cgroup.join, start_new_session=True,
            )  # fmt: skip
        server = Limited(Served(f"http://127.0.0.1:{port}", process, log_path), cgroup)
        started.append(server)
        server.served.wait_for("health", server.served.healthy)
        return server

    yield start
    for server in started:
        server.stop()


def attack(mode: str, base: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("slowhttptest")
    if tool is None:
        required("slowhttptest is not installed (Debian: apt-get install slowhttptest)")
    assert tool is not None
    args = [a.format(base=base) for a in ATTACKS[mode]]
    return subprocess.run(
        [tool, *args, "-l", str(SECONDS)], capture_output=True, text=True,
        timeout=SECONDS + 60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def outcome(server: Limited, mode: str) -> str | None:
    """One attack; what went wrong, or None."""
    served, cgroup = server.served, server.cgroup
    port = int(served.url.rsplit(":", 1)[1])
    probe = HealthProbe(port, SECONDS)
    probe.start()
    run = attack(mode, served.url)
    health = probe.result()
    probes = len(health.latencies) + health.failures
    share = len(health.latencies) / probes if probes else 0.0
    events = cgroup.events()
    if served.process.poll() is not None:
        return f"{mode}: server exited {served.process.returncode}: {served.log()[-1500:]}"
    if events.oom_kills or events.limit_hits:
        return f"{mode}: {events.oom_kills} OOM kill(s), {events.limit_hits} limit hit(s)"
    if share < MIN_HEALTH_SHARE:
        return f"{mode}: /healthz answered {share:.0%} of {probes} probes: {run.stdout[-800:]}"
    # The attack's connections close at its end; the server may take a moment over them.
    deadline = time.monotonic() + AFTER_SECONDS
    while not served.healthy():
        if time.monotonic() > deadline:
            return f"{mode}: /healthz unanswered {AFTER_SECONDS} s after the attack"
        time.sleep(0.2)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_slowhttptest_leaves_the_lifted_service_alive_and_answering(
    name: str, limited: object, summary: RunSummary
) -> None:
    if shutil.which(SERVERS[name][0], path=os.path.dirname(sys.executable)) is None:
        pytest.skip(f"{SERVERS[name][0]} is not installed (dev lock, extra `servers`)")
    server: Limited = limited(name)  # type: ignore[operator]
    failed = [found for mode in ATTACKS if (found := outcome(server, mode)) is not None]
    reading = server.cgroup.read()
    peak = reading.peak_bytes if reading else None
    if peak is not None:
        summary.append(f"lifted, {name}: cgroup peak {peak / MB:.0f} MB over {', '.join(ATTACKS)}")
    assert not failed, "\n".join(failed)
    # A client gone is an ordinary event: one line at most, never a traceback.
    log = server.served.log()
    errors = [line for line in log.splitlines() if re.match(r"\w+(Error|Exception)\b", line)]
    tracebacks = log.count("Traceback")
    assert tracebacks == 0, f"{tracebacks} tracebacks in the server's log, the last: {errors[-1:]}"
