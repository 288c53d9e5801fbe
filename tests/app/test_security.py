"""The admin surface's secrets: the token decides only through hmac.compare_digest, never
reaches a log or a response, and no environment value leaks through the diagnostics.

The in-process checks (token semantics through TestClient, caplog) are in test_diagnostics.py;
these add the real server: uvicorn's own logs and header handling included. A timing test of
the comparison is left out on purpose: on a shared machine its noise is far larger than the
difference it would look for.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from app.memory import status_route  # the one bearer check: status route and admin release
from tests.integration import conftest as integration
from tests.integration.conftest import Server

server_factory = integration.server_factory  # the real-server fixture, reused as it is

ADMIN_ROUTES = [("GET", "/debug/memory"), ("POST", "/admin/memory/release")]
RECORD = {"sku": "SKU-00042", "quantity": 3, "unit_price": 9.99, "customer": "c-17"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def one_off(token: str) -> str:
    """The token with its last character changed: same length, one place wrong."""
    return token[:-1] + ("1" if token.endswith("0") else "0")


def test_admin_check_decides_by_hmac_compare_digest(
    serve: Callable[..., TestClient], token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, object]] = []
    verdict: list[bool] = []  # empty: the real comparison; else the answer to force

    def compare_digest(given: object, expected: object) -> bool:
        calls.append((given, expected))
        return verdict[0] if verdict else hmac.compare_digest(given, expected)  # type: ignore[arg-type]

    monkeypatch.setattr(status_route, "hmac", SimpleNamespace(compare_digest=compare_digest))
    client = serve(admin_token=token)
    assert client.get("/debug/memory").status_code == 401
    assert calls == []  # no token, nothing to compare
    assert client.get("/debug/memory", headers=bearer(one_off(token))).status_code == 403
    assert calls == [(one_off(token).encode(), token.encode())]  # bytes: no str shortcut
    verdict.append(False)
    assert client.get("/debug/memory", headers=bearer(token)).status_code == 403
    verdict[0] = True
    assert client.get("/debug/memory", headers=bearer("x" * 20)).status_code == 200
    assert len(calls) == 3  # every verdict came from compare_digest and nothing else


@pytest.mark.parametrize("tail", [b"\xa0", b"\x85", b"\xc2\xa0", b"\x00", b"\x0b", b"\x0c"])
def test_the_token_is_compared_on_the_exact_bytes_sent(
    serve: Callable[..., TestClient], token: str, tail: bytes
) -> None:
    """The right token with one more byte a str.strip() would drop: 403, never 200."""
    client = serve(admin_token=token)
    assert client.get("/debug/memory", headers=bearer(token)).status_code == 200
    sent = {"Authorization": b"Bearer " + token.encode() + tail}
    assert client.get("/debug/memory", headers=sent).status_code == 403


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_auth_at_the_real_server(
    server_factory: Callable[..., Server], method: str, path: str
) -> None:
    server = server_factory()
    missing = server.client.request(method, path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    for refused in (f"Basic {server.token}", server.token, "Bearer", "Token x", ""):
        response = server.client.request(method, path, headers={"Authorization": refused})
        assert response.status_code == 401, refused
    for wrong in (one_off(server.token), server.token[:-1], server.token + "0", "x" * 64):
        response = server.client.request(method, path, headers=bearer(wrong))
        assert response.status_code == 403, wrong
        assert server.token not in response.text
    assert server.client.request(method, path, headers=bearer(server.token)).status_code == 200
    lower = {"Authorization": f"bearer {server.token}"}
    assert server.client.request(method, path, headers=lower).status_code == 200


def test_tokens_never_reach_the_server_log(server_factory: Callable[..., Server]) -> None:
    # The most talkative configuration users can choose: debug logs and the access log on.
    server = server_factory(LOG_LEVEL="debug", ACCESS_LOG="1")
    wrong = [one_off(server.token), "wrong-" + secrets.token_hex(12), server.token[:-2]]
    for method, path in ADMIN_ROUTES:
        server.client.request(method, path)
        for value in wrong:
            server.client.request(method, path, headers=bearer(value))
        server.client.request(method, path, headers={"Authorization": f"Basic {server.token}"})
        server.client.request(method, path, headers=bearer(server.token))
    # A client that sends its token everywhere: public routes must not log it either.
    server.client.get("/healthz", headers=bearer(server.token))
    server.client.post("/bulk/sync", json={"records": [RECORD]}, headers=bearer(server.token))
    server.client.post(
        "/bulk/async",
        content=b"{",
        headers={**bearer(server.token), "content-type": "application/json"},
    )
    log = server.log()
    assert '"GET /debug/memory HTTP/1.1" 403' in log  # the access log really was on
    assert '"POST /admin/memory/release HTTP/1.1" 200' in log
    for secret in (server.token, *wrong):
        assert secret not in log, "a token value reached the log"


def test_responses_carry_no_environment_values(server_factory: Callable[..., Server]) -> None:
    canary = "canary-" + secrets.token_hex(16)
    secret = "s3cr3t-" + secrets.token_hex(16)
    server = server_factory(LEAN_CANARY=canary, SECRET_KEY=secret, RAILWAY_REPLICA_ID="replica-7")
    report = server.client.get("/debug/memory", headers=bearer(server.token))
    assert report.status_code == 200
    assert report.json()["replica_id"] == "replica-7"  # the one variable shown, by design
    responses = [
        report,
        server.client.post("/admin/memory/release", headers=bearer(server.token)),
        server.client.get("/metrics"),
        server.client.get("/openapi.json"),
        server.client.get("/healthz"),
        server.client.get("/debug/memory"),
        server.client.get("/debug/memory", headers=bearer(one_off(server.token))),
        server.client.get(f"/bulk/{'0' * 32}"),
        server.client.post(
            "/bulk/sync", content=b'{"records": [', headers={"content-type": "application/json"}
        ),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 401, 403, 404, 422]
    for response in responses:
        for value in (canary, secret, server.token):
            assert value not in response.text, (response.request.url, value[:8])
    assert canary not in server.log() and secret not in server.log()


HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
)


def test_any_authorization_header_is_refused_cleanly(server_factory: Callable[..., Server]) -> None:
    """Whatever arrives in the header (any latin-1 byte HTTP allows there), the answer is 401 or
    403: never the report, never a 5xx."""
    server = server_factory()
    near_misses = st.builds(
        lambda cut, extra: server.token[:cut] + extra,
        st.integers(0, len(server.token)),
        HEADER_TEXT.filter(lambda s: s.strip() != ""),
    ).filter(lambda t: t.strip(" \t") != server.token)  # token + U+00A0 must be refused
    values = HEADER_TEXT | st.builds("Bearer {}".format, HEADER_TEXT | near_misses)

    @seed(20250101)
    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(value=values, route=st.sampled_from(ADMIN_ROUTES))
    def check(value: str, route: tuple[str, str]) -> None:
        method, path = route
        sent = value.strip(" \t").encode("latin-1")  # edge whitespace is not a header value
        response = server.client.request(method, path, headers={"Authorization": sent})
        assert response.status_code in (401, 403), (value, response.status_code)

    check()
    assert "Traceback" not in server.log()
