"""The edge a deployed service shows to hostile clients, tried against a real server process.

Each test sends what an attacker would (forged forwarding headers, tokens in query strings,
paths of tens of KB, every method on the admin paths, near-miss tokens) to `python -m
app.launch` on a free port, and reads the answers, the raw bytes on the socket where a client
library would tidy them, and the server's own log.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.edge.accesslog import MAX_LINE_CHARS
from tests.integration.conftest import REPO, Server, free_port

ACCESS = re.compile(r' - "[^"]*" (\d{3}|-) [\d.]+ms$')  # an access line's tail
LOG_PREFIX_CHARS = 40  # "INFO      [1234567] " and the like
FORGED = '10.0.0.1" - "GET /admin/memory/release HTTP/1.1" 200'
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
ADMIN_PATHS = ["/debug/memory", "/admin/memory/release"]


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def exchange(server: Server, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=timeout) as sock:
        sock.sendall(data)
        received = []
        while chunk := sock.recv(65536):
            received.append(chunk)
    return b"".join(received)


def request(path: str, *headers: bytes, method: bytes = b"GET") -> bytes:
    host = [] if any(h.lower().startswith(b"host:") for h in headers) else [b"Host: 127.0.0.1"]
    lines = [method + b" " + path.encode() + b" HTTP/1.1", *host, *headers]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


def access_lines(server: Server, marker: str, count: int = 1, timeout: float = 10.0) -> list[str]:
    """The access lines that contain `marker`, once `count` of them are written (a line is
    written after its answer has gone out, so it can trail the client by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in server.log().splitlines() if marker in line]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def assert_bounded(lines: list[str]) -> None:
    for line in lines:
        assert len(line) <= MAX_LINE_CHARS + LOG_PREFIX_CHARS, len(line)


# 2. Forwarded headers: trusted from FORWARDED_ALLOW_IPS only, and bounded in the log


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    server_factory: Callable[..., Server],
) -> None:
    # Loopback is not in the list, so this test's client is any peer on the internet.
    server = server_factory(ACCESS_LOG="1", FORWARDED_ALLOW_IPS="10.0.0.0/8")
    forged = request(
        "/healthz?untrusted-peer",
        b"X-Forwarded-For: " + FORGED.encode(),
        b"X-Forwarded-Proto: ws",
    )
    assert exchange(server, forged).startswith(b"HTTP/1.1 200 ")
    (line,) = access_lines(server, "/healthz?<redacted>")
    assert re.search(r"\] 127\.0\.0\.1:\d+ - \"GET /healthz\?<redacted> HTTP/1\.1\" 200 ", line)
    assert "10.0.0.1" not in server.log()


def test_forwarded_for_from_a_trusted_proxy_is_escaped_and_cut(
    server_factory: Callable[..., Server],
) -> None:
    # The default trusts a proxy on this host: the peer here. What that proxy forwards is
    # still a client's words, and it is logged as such.
    server = server_factory(ACCESS_LOG="1")
    honest = request("/healthz?from-proxy", b"X-Forwarded-For: 203.0.113.9")
    assert exchange(server, honest).startswith(b"HTTP/1.1 200 ")
    assert access_lines(server, "203.0.113.9:0 - ")  # the client the proxy named
    huge = FORGED + "A" * 15_000  # near h11's 16 KB limit for a request head
    forged = request("/metrics?forged", b"X-Forwarded-For: " + huge.encode())
    assert exchange(server, forged).startswith(b"HTTP/1.1 200 ")
    (line,) = access_lines(server, '"GET /metrics?<redacted> HTTP/1.1" 200 ')
    assert line.count('"') == 2  # only the request line's own quotes
    assert "10.0.0.1\\x22\\x20-\\x20\\x22GET\\x20/admin" in line
    assert "...(+" in line
    assert not [x for x in server.log().splitlines() if '"GET /admin/memory/release' in x]
    assert_bounded(server.log().splitlines())


def test_host_and_forwarded_proto_cannot_steer_a_redirect(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory()  # the peer is trusted: X-Forwarded-Proto would be believed
    for path in ("/healthz/", "/bulk/sync/", "/metrics/"):
        answer = exchange(server, request(path, b"Host: evil.example", b"X-Forwarded-Proto: ws"))
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 404 "), head
        assert b"location:" not in head


# 4. The access log: query strings redacted, lines bounded


def test_query_strings_never_reach_the_log(server_factory: Callable[..., Server]) -> None:
    server = server_factory(ACCESS_LOG="1")
    secret = "tok-" + "9f" * 16
    for path in ("/healthz", "/metrics", "/debug/memory", "/bulk/" + "0" * 32):
        server.client.get(path, params={"access_token": secret, "x": "1"})
    lines = access_lines(server, "?<redacted> HTTP/1.1", count=4)
    assert len(lines) == 4, server.log()
    assert secret not in server.log()
    assert "access_token" not in server.log()


def test_a_long_path_gives_one_bounded_line(server_factory: Callable[..., Server]) -> None:
    server = server_factory(ACCESS_LOG="1")
    long_path = "/bulk/" + "%0A" * 5000  # 15 KB, and a newline if decoded
    answer = exchange(server, request(long_path))
    assert answer.startswith(b"HTTP/1.1 404 ") or answer.startswith(b"HTTP/1.1 422 ")
    (line,) = access_lines(server, '"GET /bulk/%0A%0A')
    assert ACCESS.search(line), line
    assert "...(+" in line
    # Past h11's head limit: refused before the app, nothing long logged either.
    too_long = exchange(server, request("/bulk/" + "a" * 65536))
    assert too_long == b"" or too_long.startswith(b"HTTP/1.1 4")
    assert server.client.get("/healthz").status_code == 200
    assert_bounded(server.log().splitlines())
    assert "Traceback" not in server.log()


# 5. The admin routes and the interactive docs


def test_no_token_means_404_to_every_method_and_no_trace_in_the_schema(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(ADMIN_TOKEN="")
    statuses = {
        (method, path): server.client.request(method, path).status_code
        for method in EVERY_METHOD
        for path in ADMIN_PATHS
    }
    assert set(statuses.values()) == {404}, statuses
    schema = server.client.get("/openapi.json").text
    assert "/debug" not in schema and "/admin" not in schema
    assert [server.client.get(p).status_code for p in ("/docs", "/redoc")] == [404, 404]


def test_with_a_token_the_admin_routes_stay_out_of_the_schema(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory()
    assert server.client.get("/debug/memory", headers=server.auth).status_code == 200
    schema = server.client.get("/openapi.json").text
    assert "/debug" not in schema and "/admin" not in schema


def test_api_docs_serve_pages_that_load_a_cdn(server_factory: Callable[..., Server]) -> None:
    # What API_DOCS=1 turns on, and why it is off by default: third-party scripts.
    server = server_factory(API_DOCS="1")
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and server.client.get("/redoc").status_code == 200
    assert re.search(r"<script src=\"https://[^\"]+\"", docs.text)


# 6d. HEAD /healthz


def test_head_healthz_is_answered_without_a_body(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    # A HEAD, then a GET on the same connection: any body after the HEAD would corrupt it.
    pipelined = request("/healthz", method=b"HEAD").replace(b"Connection: close\r\n", b"")
    answer = exchange(server, pipelined + request("/healthz"))
    first, second = answer.split(b"HTTP/1.1 ", 2)[1:]
    assert first.startswith(b"200 ") and first.endswith(b"\r\n\r\n")
    assert second.startswith(b"200 ") and second.endswith(b'{"status":"ok"}')


# 6e. Path parameters that do not fit: a short reply, whatever was sent


@pytest.mark.parametrize("path", ["/bulk/" + "z" * 15_000, "/products/" + "SKU-" * 3_500])
def test_a_long_path_parameter_is_not_echoed(
    server_factory: Callable[..., Server], path: str
) -> None:
    server = server_factory()
    response = server.client.get(path)
    assert response.status_code in (404, 422)
    assert len(response.content) < 512, len(response.content)
    assert path[-20:] not in response.text


# 7. The token: printable ASCII at startup, exact bytes at the door


def test_a_non_ascii_token_stops_startup_with_one_line(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "ADMIN_TOKEN": "0123456789abcdef\u00e9",
        "DATABASE_PATH": str(tmp_path / "db.sqlite"),
        "MEMORY_PROFILE": "glibc",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app.launch"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines == [
        "configuration error: ADMIN_TOKEN=<hidden>: must be printable ASCII, '!' to '~' "
        "(no spaces, control or non-ASCII characters)"
    ]
    assert "\u00e9" not in done.stderr + done.stdout


@pytest.mark.parametrize("tail", [b"\xa0", b"\x85"])
def test_the_right_token_with_a_strippable_byte_is_refused(
    server_factory: Callable[..., Server], tail: bytes
) -> None:
    server = server_factory()
    token = server.token.encode()
    answers = [
        exchange(server, request("/debug/memory", b"Authorization: Bearer " + token + end))
        for end in (b"", tail)
    ]
    assert [answer[:12] for answer in answers] == [b"HTTP/1.1 200", b"HTTP/1.1 403"]


# The body path: a refused body closes its connection, a client gone mid-body is one line, and
# the errors say what is wrong, with admission on (the gate reads the body) and off (the route).
BODY_PATHS = [{}, {"MEMORY_ADMISSION": "0"}]
BODY_IDS = ["admission", "no-admission"]


def bulk_head(*headers: bytes, length: int | None = None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    lines = [b"POST /bulk/sync HTTP/1.1", b"Host: 127.0.0.1", framing, *headers]
    return b"\r\n".join([*lines, b"", b""])


@pytest.mark.parametrize("env", BODY_PATHS, ids=BODY_IDS)
def test_a_body_past_the_limit_closes_the_connection(
    server_factory: Callable[..., Server], env: dict[str, str]
) -> None:
    server = server_factory(MAX_BODY_MB="1", **env)
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))  # 1.25 MB
    pipelined = request("/healthz")
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
        sock.sendall(bulk_head(b"Content-Type: application/json") + body)
        with contextlib.suppress(OSError):  # the server may stop reading: that is the point
            sock.sendall(body + b"0\r\n\r\n" + pipelined)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk_in := sock.recv(65536):
                received += chunk_in
    assert received.startswith(b"HTTP/1.1 413 "), received[:200]
    assert b"connection: close" in received.lower()
    assert received.count(b"HTTP/1.1 ") == 1  # the pipelined request was not answered


@pytest.mark.parametrize("env", BODY_PATHS, ids=BODY_IDS)
def test_a_client_gone_mid_upload_is_one_info_line(
    server_factory: Callable[..., Server], env: dict[str, str]
) -> None:
    server = server_factory(**env)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
            sock.sendall(bulk_head(b"Content-Type: application/json", length=10) + b"{")
    deadline = time.monotonic() + 10
    while server.log().count("client disconnected after 1 body bytes") < 3:
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert "ERROR" not in log


@pytest.mark.parametrize("env", BODY_PATHS, ids=BODY_IDS)
@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"Content-Encoding: gzip", "Content-Encoding"),
        (b"Content-Type: application/json; charset=latin1", "UTF-8"),
        (b"Content-Type: application/json; charset=utf-16", "UTF-8"),
    ],
)
def test_a_body_the_service_cannot_read_as_sent_is_415(
    server_factory: Callable[..., Server], env: dict[str, str], header: bytes, reason: str
) -> None:
    server = server_factory(**env)
    json_type = b"Content-Type: application/json"
    headers = [header] if header.startswith(b"Content-Type") else [header, json_type]
    reply = exchange(server, bulk_head(*headers, b"Connection: close", length=2) + b"{}")
    assert reply.startswith(b"HTTP/1.1 415 "), reply[:200]
    assert reason.encode() in reply


def test_a_bulk_path_with_the_wrong_method_is_405(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    assert server.client.get("/bulk/sync").status_code == 405
    assert server.client.get("/bulk/async").status_code == 405
    assert server.client.get("/bulk/" + "0" * 32).status_code == 404  # a result id still routes
