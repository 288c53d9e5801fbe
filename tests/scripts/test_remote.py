"""Remote mode's reading of /debug/memory: against a recorded answer, and against the real service
started on loopback (remote mode does not care where the service runs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.local import LocalServer, free_port
from scripts.verify.core.remote import RemoteService, sample_from_debug, series_name

FIXTURES = Path(__file__).parent / "fixtures"


def recorded() -> dict[str, object]:
    return json.loads((FIXTURES / "debug_memory.json").read_text())


def test_a_recorded_answer_becomes_one_sample() -> None:
    document = recorded()
    sample = sample_from_debug(document, t=4.0)
    assert sample.series == f"pid {document['pid']}"
    assert sample.rss_bytes == document["rss_bytes"]
    assert sample.pss_bytes == document["pss_bytes"]
    assert sample.cgroup_usage_bytes == document["cgroup"]["usage_bytes"]  # type: ignore[index]


def test_replicas_are_told_apart_by_replica_id_and_pid() -> None:
    first = {**recorded(), "replica_id": "a1b2", "pid": 7}
    second = {**first, "replica_id": "c3d4"}
    worker = {**first, "pid": 8}
    assert len({series_name(first), series_name(second), series_name(worker)}) == 3
    assert series_name(first) == "a1b2 pid 7"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    folder = tmp_path_factory.mktemp("remote")
    server = LocalServer(
        profile="glibc",
        workdir=folder,
        log_path=folder / "server.log",
        cleanup_interval_seconds=60,
        cache_ttl_seconds=60,
        limit_mb=500,
    ).start()
    try:
        server.wait_healthy(60)
        yield server
    finally:
        server.stop()


def test_the_live_service_is_read_as_one_series(service: LocalServer) -> None:
    remote = RemoteService(service.base_url, service.token, probes_per_tick=3)
    document = remote.check()
    assert document["profile"] == "glibc"
    samples = remote.probe(1.0)
    assert len(samples) == 1  # three reads, one process: one series
    assert samples[0].series == f"pid {service.process.pid}"  # type: ignore[union-attr]
    assert samples[0].rss_bytes and samples[0].pss_bytes
    # The sampler's reads leave out the split; the two reads a run makes of it have it.
    assert remote.last_document is not None and remote.last_document["holdings"] is None
    split = remote.split()
    assert split is not None and split.source == "status route" and split.live_bytes


def test_a_wrong_token_is_a_run_not_made_with_the_reason(service: LocalServer) -> None:
    with pytest.raises(RunNotMade, match="refused the token"):
        RemoteService(service.base_url, "x" * 32).check()


def test_an_unreachable_service_is_a_run_not_made() -> None:
    with pytest.raises(RunNotMade, match="not reachable"):
        RemoteService(f"http://127.0.0.1:{free_port()}", "x" * 32, timeout=2).check()


def test_a_status_route_that_is_not_mounted_says_how_to_mount_it(service: LocalServer) -> None:
    remote = RemoteService(service.base_url, service.token, status_path="/internal/memory")
    with pytest.raises(RunNotMade, match=r"not mounted.*memory.install\(app, status_token="):
        remote.check()
