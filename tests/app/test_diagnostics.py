"""Health, metrics, the memory report and the admin release, with their token check."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.diagnostics import QUIET_PATHS
from app.memory import Readers
from app.memory.cgroup import read_cgroup_memory
from tests.app.conftest import FIXTURES, frame

ADMIN_PATHS = [("GET", "/debug/memory"), ("POST", "/admin/memory/release")]
CONTRACT_METRICS = {
    "memory_rss_bytes",
    "memory_cgroup_usage_bytes",
    "memory_cgroup_limit_bytes",
    "memory_releases_total",
    "memory_released_bytes_total",
    "memory_last_release_duration_seconds",
    "bulk_cache_entries",
    "bulk_cache_bytes",
    "memory_cleanup_failures_total",
}
RECORD = {"sku": "SKU-00042", "quantity": 3, "unit_price": 9.99, "customer": "c-17"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sample_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_healthz(serve: Callable[..., TestClient]) -> None:
    response = serve().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_metrics_has_every_documented_name(
    serve: Callable[..., TestClient], token: str
) -> None:
    # This machine's cgroup has no limit; the v2 fixture stands in for a container's.
    tree = FIXTURES / "cgroup" / "v2"
    reading = read_cgroup_memory(tree / "sys" / "fs" / "cgroup", tree / "proc_self_cgroup")
    client = serve(admin_token=token)
    memory = frame(client.app).memory
    memory.readers = Readers(rss=memory.read_rss, cgroup=lambda: reading)
    assert client.post("/bulk/sync", json={"records": [RECORD]}).status_code == 201
    assert client.post("/admin/memory/release", headers=bearer(token)).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    names = sample_names(response.text)
    assert names >= CONTRACT_METRICS, CONTRACT_METRICS - names
    (released,) = [s for s in families["memory_releases"].samples if s.name.endswith("_total")]
    assert released.labels == {"trigger": "admin", "outcome": "ok"} and released.value == 1
    (entries,) = families["bulk_cache_entries"].samples
    assert entries.value == 1
    (cache_bytes,) = families["bulk_cache_bytes"].samples
    assert cache_bytes.value > 100
    assert {"process_resident_memory_bytes", "python_gc_objects_collected_total"} <= names


def test_metrics_on_this_machine(serve: Callable[..., TestClient]) -> None:
    names = sample_names(serve().get("/metrics").text)
    expected = {"memory_rss_bytes", "memory_released_bytes_total", "bulk_cache_entries"}
    assert expected <= names
    reading = read_cgroup_memory()
    if reading is not None and reading.usage_bytes is not None and reading.limit_bytes:
        assert "memory_cgroup_usage_bytes" in names
    else:  # no cgroup, or one with no limit of its own: its usage is not this service's
        assert "memory_cgroup_usage_bytes" not in names


def test_quiet_paths_are_the_probe_and_operator_endpoints() -> None:
    assert {"/healthz", "/metrics", "/debug/memory", "/admin/memory/release"} <= QUIET_PATHS
    assert not {"/bulk/sync", "/bulk/async", "/products/SKU-00001"} & QUIET_PATHS


def test_healthz_answers_head(serve: Callable[..., TestClient]) -> None:
    response = serve().head("/healthz")
    assert response.status_code == 200
    assert response.content == b""


EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@pytest.mark.parametrize("method", EVERY_METHOD)
@pytest.mark.parametrize("path", [path for _, path in ADMIN_PATHS])
def test_no_token_configured_hides_the_admin_routes(
    serve: Callable[..., TestClient], method: str, path: str
) -> None:
    client = serve()
    assert client.request(method, path).status_code == 404
    assert client.request(method, path, headers=bearer("x" * 32)).status_code == 404


@pytest.mark.parametrize("configured", [False, True])
def test_admin_routes_are_never_in_the_schema(
    serve: Callable[..., TestClient], token: str, configured: bool
) -> None:
    client = serve(admin_token=token if configured else None)
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/debug", "/admin"))], paths
    assert set(paths["/healthz"]) == {"get"}  # HEAD served, not listed a second time


def test_interactive_docs_are_off_by_default(serve: Callable[..., TestClient]) -> None:
    client = serve()
    assert [client.get(path).status_code for path in ("/docs", "/redoc")] == [404, 404]
    assert client.get("/openapi.json").status_code == 200


def test_api_docs_turns_them_on(serve: Callable[..., TestClient]) -> None:
    client = serve(api_docs=True)
    assert [client.get(path).status_code for path in ("/docs", "/redoc")] == [200, 200]


def test_no_redirect_is_built_from_the_host_header(serve: Callable[..., TestClient]) -> None:
    client = serve()
    headers = {"host": "evil.example", "x-forwarded-proto": "ws"}
    response = client.get("/healthz/", headers=headers, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
def test_token_checks(serve: Callable[..., TestClient], token: str, method: str, path: str) -> None:
    client = serve(admin_token=token)
    missing = client.request(method, path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.request(method, path, headers={"Authorization": token}).status_code == 401
    assert client.request(method, path, headers={"Authorization": "Bearer "}).status_code == 401
    basic = {"Authorization": f"Basic {token}"}
    assert client.request(method, path, headers=basic).status_code == 401
    other = token[:-1] + ("1" if token.endswith("0") else "0")  # same length, one char off
    wrong = client.request(method, path, headers=bearer(other))
    assert wrong.status_code == 403
    assert token not in wrong.text
    assert client.request(method, path, headers=bearer(token[:-1])).status_code == 403
    assert client.request(method, path, headers=bearer(token)).status_code == 200
    lower = {"Authorization": f"bearer {token}"}
    assert client.request(method, path, headers=lower).status_code == 200


def test_debug_memory_report(
    serve: Callable[..., TestClient], token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAILWAY_REPLICA_ID", "replica-a1")
    client = serve(admin_token=token, memory_profile="glibc", memory_limit_mb=400)
    client.post("/bulk/async", json={"records": [RECORD]})
    client.post("/admin/memory/release", headers=bearer(token))
    report = client.get("/debug/memory", headers=bearer(token)).json()
    assert report["pid"] == os.getpid()
    assert report["replica_id"] == "replica-a1"
    assert report["profile"] == "glibc"
    assert report["rss_bytes"] > 0
    assert isinstance(report["uss_bytes"], int) and isinstance(report["pss_bytes"], int)
    assert report["limit_mb"] == 400
    assert report["allocator"]["name"] == "glibc"
    assert report["allocator"]["release_method"] == "malloc_trim"
    cgroup = report["cgroup"]
    if cgroup is not None:
        assert cgroup["version"] in (1, 2)
        assert set(cgroup) == {
            "version", "limit_bytes", "usage_bytes", "working_set_bytes", "peak_bytes"
        }
    kinds = [entry["kind"] for entry in report["breakdown"]]
    assert "[heap]" in kinds and "file" in kinds
    rss = [entry["rss_bytes"] for entry in report["breakdown"]]
    assert rss == sorted(rss, reverse=True)
    (release,) = report["releases"]
    assert release["trigger"] == "admin" and release["ok"] is True
    assert report["cleanup"]["enabled"] is True and report["cleanup"]["running"] is True
    assert report["cleanup"]["requests_seen"] == 1  # the bulk call; admin calls are quiet
    assert report["cache"]["entries"] == 1 and report["cache"]["bytes"] > 0
    # The verifier's Locust reads the TTL here to tell a lost result from an expired one.
    assert report["cache"]["ttl_seconds"] == 300.0
    assert (report["cache"]["evictions"], report["cache"]["expirations"]) == (0, 0)


def test_admin_release_result(serve: Callable[..., TestClient], token: str) -> None:
    client = serve(admin_token=token)
    response = client.post("/admin/memory/release", headers=bearer(token))
    assert response.status_code == 200
    result = response.json()
    for key in ("rss_before_bytes", "rss_after_bytes", "freed_bytes", "gc_collected"):
        assert isinstance(result[key], int), key
    assert result["freed_bytes"] == result["rss_before_bytes"] - result["rss_after_bytes"]
    assert result["method"] == "malloc_trim"
    assert result["ok"] is True and result["trigger"] == "admin"
    assert 0 <= result["duration_seconds"] < 10


def test_token_never_leaks(
    serve: Callable[..., TestClient], token: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = serve(admin_token=token)
    report = client.get("/debug/memory", headers=bearer(token))
    client.post("/admin/memory/release", headers=bearer(token))
    client.get("/debug/memory", headers=bearer("0" * 32))
    metrics_text = client.get("/metrics").text
    assert report.status_code == 200
    assert token not in report.text
    assert token not in json.dumps(client.app.openapi())  # type: ignore[attr-defined]
    assert token not in metrics_text
    assert caplog.records, "the app's log records should be captured"
    assert token not in caplog.text
