"""An acknowledged result is never lost: real servers, real workers, a real PostgreSQL.

Every 201 is a promise that GET /bulk/{id} answers until the TTL. These tests hold the service
to it across workers, across replicas (two server processes sharing one PostgreSQL), across a
worker killed with SIGKILL in the middle of a load, and across the database going away and
coming back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from scripts.verify.core.postgres import Cluster
from tests.app.workload.records import record
from tests.integration.conftest import REPO, Server

BODY = {"records": [record(sku=f"SKU-{i:05d}") for i in range(20)]}
STORES = ["sqlite", "postgres"]


def store_env(kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if kind == "postgres":
        return {"DATABASE_URL": request.getfixturevalue("postgres_url")}
    return {}  # the SQLite file start_server puts in the test's folder


def submit(url: str, path: str = "/bulk/async") -> str | None:
    """One submission on its own connection: its id if acknowledged (201), else None."""
    try:
        response = httpx.post(url + path, json=BODY, timeout=30.0)
    except httpx.TransportError:
        return None  # never acknowledged: nothing was promised
    return str(response.json()["id"]) if response.status_code == 201 else None


def read(url: str, result: str) -> int:
    """GET on its own connection (so the kernel picks the worker anew); its status."""
    response = httpx.get(f"{url}/bulk/{result}", timeout=30.0)
    if response.status_code == 200:
        assert response.json()["id"] == result
    return response.status_code


def worker_pid(server: Server) -> int:
    """The pid of the worker that answers a fresh connection."""
    status = httpx.get(server.url + "/debug/memory", headers=server.auth, timeout=10.0)
    return int(status.json()["pid"])


def workers(server: Server) -> list[psutil.Process]:
    """uvicorn's worker processes (spawned), not multiprocessing's resource tracker."""
    children = psutil.Process(server.process.pid).children()
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


@pytest.mark.parametrize("kind", STORES)
def test_two_workers_read_back_every_result_either_made(
    server_factory: Callable[..., Server], request: pytest.FixtureRequest, kind: str
) -> None:
    server = server_factory(WEB_CONCURRENCY="2", **store_env(kind, request))
    made = [submit(server.url, path) for path in ("/bulk/sync", "/bulk/async") * 10]
    assert None not in made
    statuses = [read(server.url, str(result)) for result in made for _ in range(4)]
    assert statuses == [200] * len(statuses)  # 0 lost
    seen = {worker_pid(server) for _ in range(40)}
    assert seen == {w.pid for w in workers(server)} and len(seen) == 2  # both workers answered


def test_two_replicas_sharing_postgres_read_back_every_result(
    server_factory: Callable[..., Server], postgres_url: str
) -> None:
    replicas = [server_factory(DATABASE_URL=postgres_url) for _ in range(2)]
    made = {replica.url: [submit(replica.url) for _ in range(10)] for replica in replicas}
    for results in made.values():
        assert None not in results
    statuses = [
        read(replica.url, str(result))
        for results in made.values()
        for result in results
        for replica in replicas  # each result from each replica: its own and the other's
    ]
    assert statuses == [200] * 40
    assert all("store postgresql 127.0.0.1:" in replica.log() for replica in replicas)


@pytest.mark.parametrize("kind", STORES)
def test_a_worker_killed_mid_load_loses_no_acknowledged_result(
    server_factory: Callable[..., Server], request: pytest.FixtureRequest, kind: str
) -> None:
    server = server_factory(WEB_CONCURRENCY="2", **store_env(kind, request))
    acknowledged: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            result = submit(server.url)
            if result is not None:
                acknowledged.append(result)

    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        deadline = time.monotonic() + 30
        while len(acknowledged) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = workers(server)[0]
        victim.send_signal(signal.SIGKILL)
        before_kill = len(acknowledged)
        victim.wait(10)
        while len(acknowledged) < before_kill + 20 and time.monotonic() < deadline + 30:
            time.sleep(0.05)
    finally:
        stop.set()
        for client in clients:
            client.join(60)
    assert before_kill >= 20 and len(acknowledged) >= before_kill + 20
    statuses = [read(server.url, result) for result in acknowledged]
    lost = [r for r, status in zip(acknowledged, statuses, strict=True) if status != 200]
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged results lost"


def test_a_malformed_database_url_stops_startup_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.launch"],
        cwd=tmp_path,
        env={
            "PYTHONPATH": str(REPO),
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": "postgresql://user:hunter2@:5432/app",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("configuration error: DATABASE_URL=<hidden>: ")
    assert "hunter2" not in result.stderr + result.stdout


def test_postgres_stopped_mid_run_gives_503_then_the_service_recovers(
    server_factory: Callable[..., Server], postgres_cluster: Cluster, postgres_url: str
) -> None:
    server = server_factory(DATABASE_URL=postgres_url, CACHE_MAX_MB="0.0001")  # no hot copies
    kept = submit(server.url)
    assert kept is not None
    postgres_cluster.stop()
    try:
        answers = [
            httpx.post(server.url + "/bulk/sync", json=BODY, timeout=30.0),
            httpx.post(server.url + "/bulk/async", json=BODY, timeout=30.0),
            httpx.get(f"{server.url}/bulk/{kept}", timeout=30.0),
            httpx.get(server.url + "/products/SKU-00001", timeout=30.0),
        ] * 3
        healthz = httpx.get(server.url + "/healthz", timeout=5.0)
    finally:
        postgres_cluster.start()
    assert [a.status_code for a in answers] == [503] * len(answers)
    assert all(int(a.headers["retry-after"]) > 0 for a in answers)
    assert healthz.status_code == 200  # a liveness check: the process is fine
    deadline = time.monotonic() + 30
    back = None
    while back is None and time.monotonic() < deadline:
        back = submit(server.url)
        time.sleep(0.5)
    assert back is not None, server.log()
    assert read(server.url, kept) == 200 and read(server.url, back) == 200
    log = server.log()
    assert "Traceback" not in log
    assert log.count("unreachable (") == 1 and "reachable again" in log


def test_a_store_that_is_down_at_start_is_set_up_once_it_is_back(
    server_factory: Callable[..., Server], postgres_cluster: Cluster, postgres_url: str
) -> None:
    postgres_cluster.stop()
    try:
        server = server_factory(DATABASE_URL=postgres_url)
    finally:
        postgres_cluster.start()
    assert "unreachable for now" in server.log()
    deadline = time.monotonic() + 30
    made = None
    while made is None and time.monotonic() < deadline:
        made = submit(server.url)
        time.sleep(0.5)
    assert made is not None and read(server.url, made) == 200
    assert os.environ.get("DATABASE_URL") is None  # nothing leaked into the test process
