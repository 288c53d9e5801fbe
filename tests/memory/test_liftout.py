"""The package lifted into another service, as a reader of the README would do it.

The folder is copied into a temporary project as `svc.memory`; the README's wiring snippet is
written into it as the README has it, with only the package name changed (`yourpkg` to `svc`),
so the doc and this test cannot drift. The project is started for real under each server users
run, given ADMIN_TOKEN and MEMORY_CLEANUP_INTERVAL as the verifier gives them, driven with a
burst, and must show the loop's start line per worker, a release line, its metrics and its
status route. Once more it is pasted into a service whose FastAPI app makes operation ids from
``route.tags[0]``, as real services do: nothing the snippet adds may be a route without tags.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.memory.conftest import PACKAGE, REPO, allocator_free_environ

README = REPO / "README.md"
SECTION = "### Lift: the memory manager in your own service"
START_LINE = "[memory-cleanup] Background cleanup task running every"
# Any trigger: under 7 s intervals the interval tick may land in the burst or the 5 s idle wait
# after it (on a busy machine, it does) and take the release the idle trigger would have made.
# Before the burst RSS is under the threshold, so a release line is the burst's either way.
RELEASE_LINE = re.compile(
    r"Memory Release: [\d.]+MB freed \| RSS: .* \((idle|threshold|interval)\)"
)
# What the snippet leaves to the service: a burst to clean up after. A long-lived object in
# every few hundred keeps pymalloc arenas pinned, so RSS stays up after the burst and the idle
# release has something to do, as in a real service.
ROUTES = """from svc.wiring import app

KEPT: list[dict[str, object]] = []


def burst(n: int = 400_000) -> dict[str, int]:
    rows = [{"i": i, "text": "x" * 40} for i in range(n)]
    KEPT.extend(rows[::400])
    return {"rows": len(rows)}


app.add_api_route("/healthz", lambda: {"status": "ok"}, tags=["ops"])
app.add_api_route("/burst", burst, methods=["POST"], tags=["work"])
"""
TOKEN = "lifted-status-token-0123456789"
# A service's own app, as FastAPI's full-stack template makes it: ids from the first tag.
TAGGED_APP = 'FastAPI(generate_unique_id_function=lambda route: f"{route.tags[0]}-{route.name}")'


def snippet(readme: str, package: str) -> str:
    """The first Python block of the README's section, with only the package name changed."""
    section = readme.split(SECTION, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {SECTION!r}"
    return match.group(1).replace("yourpkg.", f"{package}.")


def make_project(root: Path, app: str | None = None) -> Path:
    """svc/memory (the copied folder), svc/wiring.py (the snippet, with ``app`` for its
    ``FastAPI()`` where given), svc/main.py."""
    svc = root / "svc"
    shutil.copytree(PACKAGE, svc / "memory", ignore=shutil.ignore_patterns("__pycache__"))
    (svc / "__init__.py").write_text("")
    wiring = snippet(README.read_text(), "svc")
    if app is not None:
        assert wiring.count("FastAPI()") == 1
        wiring = wiring.replace("FastAPI()", app)
    (svc / "wiring.py").write_text(wiring)
    (svc / "main.py").write_text(ROUTES)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, what: str, check: object, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.log()}")
            if check():  # type: ignore[operator]
                return
            time.sleep(0.2)
        raise AssertionError(f"no {what} within {timeout}s:\n{self.log()}")

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# fmt: off
SERVERS = {
    "uvicorn-1": ["uvicorn", "svc.main:app", "--host", "127.0.0.1", "--port", "{port}"],
    "uvicorn-2": ["uvicorn", "svc.main:app", "--host", "127.0.0.1", "--port", "{port}",
                  "--workers", "2"],
    # FastAPI's documented way (fastapi-cli): finds the app from the file's path.
    "fastapi-run-1": ["fastapi", "run", "svc/main.py", "--host", "127.0.0.1", "--port", "{port}"],
    # uvicorn's worker for gunicorn, in its own package since uvicorn.workers was deprecated.
    "gunicorn-2": ["gunicorn", "svc.main:app", "-k", "uvicorn_worker.UvicornWorker",
                   "-w", "2", "-b", "127.0.0.1:{port}"],
    # gunicorn's own ASGI worker (gunicorn 24 on), no uvicorn in the worker.
    "gunicorn-asgi-2": ["gunicorn", "svc.main:app", "-k", "asgi", "-w", "2",
                        "-b", "127.0.0.1:{port}"],
    "granian-2": ["granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}",
                  "--workers", "2", "svc.main:app"],
}
WORKERS = {
    "uvicorn-1": 1, "uvicorn-2": 2, "fastapi-run-1": 1, "gunicorn-2": 2, "gunicorn-asgi-2": 2,
    "granian-2": 2,
}
# fmt: on


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture
def serve(project: Path) -> Iterator[object]:
    started: list[Served] = []

    def start(name: str) -> Served:
        port = free_port()
        module, *args = SERVERS[name]
        argv = [sys.executable, "-m", module, *(a.format(port=port) for a in args)]
        log_path = project / f"{name}.log"
        environ = {
            **allocator_free_environ(),
            "PYTHONPATH": str(project),
            "ADMIN_TOKEN": TOKEN,  # what the verifier hands the service it starts
            "MEMORY_CLEANUP_INTERVAL": "7",  # the verifier's presets set it
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=project, env=environ, stdout=log, stderr=subprocess.STDOUT
            )
        served = Served(f"http://127.0.0.1:{port}", process, log_path)
        started.append(served)
        served.wait_for("health", served.healthy)
        return served

    yield start
    for served in started:
        served.stop()


def test_the_snippet_names_only_the_package_it_is_given() -> None:
    code = snippet(README.read_text(), "svc")
    assert "from svc.memory import" in code
    assert not re.search(r"\b(from|import) app\b|\bapp\.memory|yourpkg", code)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_the_lifted_package_runs_under(name: str, serve: object) -> None:
    if shutil.which(SERVERS[name][0], path=os.path.dirname(sys.executable)) is None:
        pytest.skip(f"{SERVERS[name][0]} is not installed (dev lock, extra `servers`)")
    namespace = re.search(r'namespace="(\w+)"', snippet(README.read_text(), "svc"))
    prefix = f"{namespace.group(1)}_" if namespace else ""
    served: Served = serve(name)  # type: ignore[operator]
    workers = WORKERS[name]
    served.wait_for(f"{workers} start line(s)", lambda: served.log().count(START_LINE) >= workers)

    # At once, on new connections: while one worker is busy with a burst another accepts the
    # next, so every worker gets some (one after another, the same worker may take them all).
    def burst(_: int) -> int:
        with httpx.Client(base_url=served.url, timeout=60.0) as client:
            return client.post("/burst", headers={"Connection": "close"}).status_code

    with ThreadPoolExecutor(max_workers=2 * workers) as pool:
        assert list(pool.map(burst, range(2 * workers))) == [200] * (2 * workers)
    # A release (idle, or the interval's) follows the burst in a worker that served it.
    served.wait_for("a release line", lambda: RELEASE_LINE.search(served.log()), timeout=40)
    # A scrape reaches one worker, and a server may hand most new connections to the same one:
    # scrape until one that released answers (the event the test asserts), not a fixed count.
    scrapes: list[str] = []

    def released() -> bool:
        scrapes.append(
            httpx.get(
                served.url + "/metrics", headers={"Connection": "close"}, follow_redirects=True
            ).text
        )
        ok = rf'^{prefix}memory_releases_total{{.*outcome="ok".*}} [1-9]'
        return re.search(ok, scrapes[-1], re.M) is not None

    served.wait_for("a worker's /metrics showing a release", released, timeout=60)
    assert re.search(rf"^{prefix}memory_rss_bytes \d", scrapes[-1], re.M)
    assert "[memory] allocator " in served.log()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status = httpx.get(served.url + "/debug/memory", headers=bearer)
    assert status.status_code == 200, status.text
    assert status.json()["cleanup"]["interval_seconds"] == 7  # from the environment
    served.stop()
    assert served.log().count("[memory-cleanup] Stopped") >= 1, served.log()


def test_the_snippet_serves_a_service_whose_ids_come_from_route_tags(tmp_path: Path) -> None:
    """Nothing the snippet adds is an APIRoute without tags: the schema is made, and the status
    route answers the verifier's token."""
    project = make_project(tmp_path / "tagged", app=TAGGED_APP)
    port = free_port()
    log_path = project / "uvicorn.log"
    environ = {**allocator_free_environ(), "PYTHONPATH": str(project), "ADMIN_TOKEN": TOKEN}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "svc.main:app", "--port", str(port)],
            cwd=project, env=environ, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    served = Served(f"http://127.0.0.1:{port}", process, log_path)
    try:
        served.wait_for("health", served.healthy)
        schema = httpx.get(served.url + "/openapi.json")
        assert schema.status_code == 200, served.log()
        paths = schema.json()["paths"].values()
        ids = {operation["operationId"] for path in paths for operation in path.values()}
        assert ids == {"ops-<lambda>", "work-burst"}, ids
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        status = httpx.get(served.url + "/debug/memory", headers=bearer)
        assert status.status_code == 200 and status.json()["cleanup"]["enabled"] is True
        metrics = httpx.get(served.url + "/metrics", follow_redirects=True)
        assert "myservice_memory_rss_bytes" in metrics.text
    finally:
        served.stop()
