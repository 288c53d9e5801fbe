"""The bulk endpoints over HTTP, with the app's lifespan and cleanup loop running."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from app.config import Settings
from app.main import create_app
from app.workload import store as store_module
from app.workload.bulk import BulkService
from tests.app.workload.records import record

MB = 1024 * 1024
PATHS = ["/bulk/sync", "/bulk/async"]


@pytest.fixture
def client(serve: Callable[..., TestClient]) -> TestClient:
    return serve(max_bulk_records=50, max_body_mb=0.01)  # 10 KiB bodies at most


def submissions(client: TestClient) -> int:
    service: BulkService = client.app.state.bulk.service  # type: ignore[attr-defined]
    with sqlite3.connect(service.store.path) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM submissions").fetchone()
    return int(count)


@pytest.mark.parametrize("path", PATHS)
def test_submit_and_read_back(client: TestClient, path: str) -> None:
    records = [record(), record(sku="SKU-00100", quantity=1), record(sku="SKU-09999")]
    response = client.post(path, json={"records": records})
    assert response.status_code == 201, response.text
    summary = response.json()
    assert set(summary) == {"id", "records", "total_amount", "unknown_skus", "by_category"}
    assert len(summary["id"]) == 32 and int(summary["id"], 16) >= 0
    assert (summary["records"], summary["unknown_skus"]) == (3, 1)
    assert summary["total_amount"] == pytest.approx(
        sum(c["gross"] for c in summary["by_category"].values())
    )
    assert submissions(client) == 1

    stored = client.get(f"/bulk/{summary['id']}")
    assert stored.status_code == 200
    assert stored.headers["content-type"] == "application/json"
    document = stored.json()
    assert {k: document[k] for k in summary} == summary
    assert document["path"] == path.rsplit("/", 1)[1]
    assert [line["sku"] for line in document["lines"]] == [r["sku"] for r in records]


def test_unknown_result_is_404(client: TestClient) -> None:
    response = client.get(f"/bulk/{'0' * 32}")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "expired" not in detail and "evicted" not in detail


def test_a_result_dropped_from_the_hot_copies_is_read_from_the_store(
    serve: Callable[..., TestClient],
) -> None:
    client = serve(cache_max_entries=1)
    first, second = (
        client.post("/bulk/async", json={"records": [record()]}).json()["id"] for _ in range(2)
    )
    service: BulkService = client.app.state.bulk.service  # type: ignore[attr-defined]
    assert service.cache.get(first) is None and service.cache.get(second) is not None
    for result in (first, second):
        response = client.get(f"/bulk/{result}")
        assert response.status_code == 200 and response.json()["id"] == result


def expire_all(client: TestClient) -> None:
    with sqlite3.connect(client.app.state.bulk.service.store.path) as conn:  # type: ignore[attr-defined]
        conn.execute("UPDATE results SET expires_at = 0")


def test_an_expired_result_says_so_before_and_after_the_cleanup_hook(
    serve: Callable[..., TestClient],
) -> None:
    client = serve(cache_max_mb=0.0001)  # no hot copies: every read goes to the store
    result = client.post("/bulk/sync", json={"records": [record()]}).json()["id"]
    assert client.get(f"/bulk/{result}").status_code == 200
    expire_all(client)
    before = client.get(f"/bulk/{result}")
    assert before.status_code == 404 and "expired" in before.json()["detail"]
    service: BulkService = client.app.state.bulk.service  # type: ignore[attr-defined]
    assert service.purge_expired() == 1  # the cleanup hook: the row is deleted
    assert service.purge_expired() == 0
    after = client.get(f"/bulk/{result}")
    assert after.status_code == 404 and "expired" in after.json()["detail"]
    assert submissions(client) == 1  # the summary row stays: it is what says "expired"


def test_a_large_result_goes_out_a_slice_at_a_time_read_from_the_store(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(cache_max_mb=0.0001, max_body_mb=1, max_bulk_records=2000))
    with TestClient(app) as client:
        records = [record(note="n" * 200) for _ in range(1000)]
        result = client.post("/bulk/sync", json={"records": records}).json()["id"]
        whole = client.get(f"/bulk/{result}").content
    assert len(whole) > 4 * 64 * 1024
    store = app.state.bulk.service.store
    reads: list[tuple[int, int]] = []
    read = store.read

    def counted(result_id: str, offset: int, size: int) -> bytes | None:
        reads.append((offset, size))
        return read(result_id, offset, size)

    store.read = counted
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": f"/bulk/{result}", "raw_path": f"/bulk/{result}".encode(),
        "root_path": "", "query_string": b"", "headers": [], "client": ("127.0.0.1", 1),
        "server": ("testserver", 80), "state": {},
    }
    asyncio.run(app(scope, receive, send))
    # The empty parts between slices ask the server whether it can take more (the window).
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]
    assert b"".join(bodies) == whole
    assert len(bodies) == len(reads) > 4
    sizes = [size for _, size in reads]
    assert max(sizes) <= 64 * 1024  # no read is of the whole document
    assert sizes[0] < sizes[-2] == 64 * 1024  # small first, full slices once the reader kept up
    assert [offset for offset, _ in reads] == [sum(sizes[:i]) for i in range(len(sizes))]


def test_a_database_that_cannot_be_opened_gives_503_with_retry_after_and_one_line(
    serve: Callable[..., TestClient],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    client = serve(cache_max_mb=0.0001)  # no hot copies: the read-back needs the database
    service: BulkService = client.app.state.bulk.service  # type: ignore[attr-defined]
    result = client.post("/bulk/sync", json={"records": [record()]}).json()["id"]
    path = Path(service.store.path)  # type: ignore[attr-defined]
    aside = tmp_path / "aside.db"
    path.rename(aside)
    path.mkdir()  # a directory where the file was: SQLite cannot open it
    monkeypatch.setattr(store_module, "RETRY_AFTER_SECONDS", 0)  # every request tries again
    caplog.clear()
    answers = [
        client.post("/bulk/sync", json={"records": [record()]}),
        client.post("/bulk/async", json={"records": [record()]}),
        client.get("/products/SKU-00001"),
        client.get(f"/bulk/{'0' * 32}"),
    ]
    assert [a.status_code for a in answers] == [503] * 4
    assert all(a.headers["retry-after"].isdigit() for a in answers)
    assert client.get("/healthz").status_code == 200  # liveness, not the database
    lines = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and not any(r.exc_info for r in caplog.records)
    path.rmdir()
    aside.rename(path)
    back = client.get(f"/bulk/{result}")
    assert back.status_code == 200 and back.json()["id"] == result
    assert any("reachable again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"records": [', id="malformed-json"),
        pytest.param(json.dumps({"records": [record(quantity="3")]}).encode(), id="string-qty"),
        pytest.param(json.dumps({"records": [record(sku="SKU-1")]}).encode(), id="bad-sku"),
        pytest.param(json.dumps({"records": []}).encode(), id="no-records"),
        pytest.param(json.dumps({"records": [record(extra=1)]}).encode(), id="extra-field"),
        pytest.param(json.dumps([record()]).encode(), id="not-an-object"),
    ],
)
def test_invalid_body_is_422_and_stores_nothing(
    client: TestClient, path: str, payload: bytes
) -> None:
    response = client.post(path, content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert submissions(client) == 0
    assert client.app.state.bulk.service.cache.stats().entries == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", PATHS)
def test_declared_body_over_max_body_mb_is_413(client: TestClient, path: str) -> None:
    payload = json.dumps({"records": [record(note="n" * 500)] * 40}).encode()
    assert len(payload) > 0.01 * MB
    response = client.post(path, content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "MAX_BODY_MB" in response.json()["detail"]
    assert submissions(client) == 0


@pytest.mark.parametrize("path", PATHS)
def test_streamed_body_over_max_body_mb_is_413(client: TestClient, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"records": ['
        for _ in range(40):
            yield json.dumps(record(note="n" * 500)).encode() + b","
        yield json.dumps(record()).encode() + b"]}"

    response = client.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert submissions(client) == 0


def test_body_is_not_read_past_the_limit(make_settings: Callable[..., Settings]) -> None:
    """Straight over ASGI: an endless body is cut off at the limit, not buffered."""
    app = create_app(make_settings(max_body_mb=0.01))
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b" " * 1024, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/bulk/async",
        "raw_path": b"/bulk/async",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert sent[0]["status"] == 413
    assert reads <= 0.01 * MB / 1024 + 2


@pytest.mark.parametrize("path", PATHS)
def test_more_than_max_bulk_records_is_413(client: TestClient, path: str) -> None:
    response = client.post(
        path,
        json={
            "records": [{"sku": "SKU-00001", "quantity": 1, "unit_price": 1, "customer": "c"}] * 51
        },
    )
    assert response.status_code == 413
    assert "MAX_BULK_RECORDS" in response.json()["detail"]
    assert submissions(client) == 0
    exactly = client.post(path, json={"records": [record(tags=[], note="")] * 50})
    assert exactly.status_code == 201


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_415(client: TestClient, path: str, content_type: str) -> None:
    payload = json.dumps({"records": [record()]}).encode()
    response = client.post(path, content=payload, headers={"content-type": content_type})
    assert response.status_code == 415
    assert submissions(client) == 0


def test_json_content_type_with_charset_is_accepted(client: TestClient) -> None:
    payload = json.dumps({"records": [record()]}).encode()
    headers = {"content-type": "Application/JSON; charset=utf-8"}
    assert client.post("/bulk/sync", content=payload, headers=headers).status_code == 201


def test_product_lookup(client: TestClient) -> None:
    found = client.get("/products/SKU-00042")
    assert found.status_code == 200
    product = found.json()
    assert set(product) == {"sku", "name", "category", "unit_weight_g", "tax_rate"}
    assert product["sku"] == "SKU-00042"
    assert client.get("/products/SKU-09999").status_code == 404
    assert client.get("/products/not-a-sku").status_code == 404  # not this route's path


@pytest.mark.parametrize("path", PATHS)
def test_openapi_documents_the_request_body(client: TestClient, path: str) -> None:
    operation = client.get("/openapi.json").json()["paths"][path]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert schema["required"] == ["records"]
    assert schema["additionalProperties"] is False
    records = schema["properties"]["records"]
    assert records["type"] == "array" and records["minItems"] == 1
    item = records["items"]
    assert "$ref" not in json.dumps(schema), "the schema must be self-contained"
    assert set(item["properties"]) == {"sku", "quantity", "unit_price", "customer", "tags", "note"}
    assert set(item["required"]) == {"sku", "quantity", "unit_price", "customer"}
    assert item["properties"]["sku"]["pattern"] == r"^SKU-[0-9]{5}$"
    assert {"201", "413"} <= set(operation["responses"])


@pytest.mark.parametrize("path", PATHS)
def test_openapi_documents_every_error_status(client: TestClient, path: str) -> None:
    responses = client.get("/openapi.json").json()["paths"][path]["post"]["responses"]
    assert {"201", "413", "415", "422"} <= set(responses)


def test_422_does_not_echo_a_large_body(serve: Callable[..., TestClient]) -> None:
    client = serve(max_body_mb=1)
    payload = b'{"records": [' + json.dumps(record(note="n" * 500)).encode() * 1500
    assert len(payload) > 500_000
    response = client.post(
        "/bulk/async", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert len(response.content) < 64 * 1024


@pytest.mark.parametrize(("workers", "allowed"), [(1, 2), (2, 1)])
def test_bulk_submissions_run_at_most_the_workers_share_at_once(
    serve: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch, workers: int, allowed: int
) -> None:
    client = serve(bulk_concurrency=2, web_concurrency=workers)
    service = client.app.state.bulk.service  # type: ignore[attr-defined]
    lock = threading.Lock()
    running = [0]
    most = [0]
    submit = service.submit

    def slow_submit(body: bytes, path: str) -> object:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)  # long enough for the other requests to arrive while it runs
        try:
            return submit(body, path)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(service, "submit", slow_submit)
    body = {"records": [record()]}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: client.post(PATHS[i % 2], json=body), range(8)))
    assert [a.status_code for a in answers] == [201] * 8
    assert most[0] == allowed
