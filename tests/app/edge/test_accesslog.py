"""The access log line: query strings redacted, client-supplied fields escaped and bounded."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.edge.accesslog import MAX_LINE_CHARS, access_line, printable

SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/healthz",
    "raw_path": b"/healthz",
    "query_string": b"",
    "http_version": "1.1",
    "client": ("203.0.113.7", 51234),
}


def line(seconds: float = 0.0012, status: int | None = 200, **scope: object) -> str:
    return access_line({**SCOPE, **scope}, status, seconds)


def test_a_plain_request() -> None:
    assert line() == '203.0.113.7:51234 - "GET /healthz HTTP/1.1" 200 1.2ms'


def test_the_query_string_is_redacted() -> None:
    text = line(raw_path=b"/bulk/abc", query_string=b"token=s3cr3t&x=1")
    assert text == '203.0.113.7:51234 - "GET /bulk/abc?<redacted> HTTP/1.1" 200 1.2ms'


def test_the_path_is_logged_as_sent_not_decoded() -> None:
    # %0A stays %0A: a decoded newline would start a forged line.
    text = line(path="/a\nINFO fake", raw_path=b"/a%0AINFO%20fake")
    assert "\n" not in text and "/a%0AINFO%20fake" in text


def test_a_forged_client_address_cannot_fake_a_line() -> None:
    forged = '10.0.0.1" - "GET /admin/memory/release HTTP/1.1" 200'
    text = line(client=(forged, 0))
    assert text.count('"') == 2  # only the request line's own quotes
    assert "\\x22" in text


@pytest.mark.parametrize("field", ["client", "method", "raw_path"])
def test_every_client_supplied_field_is_bounded(field: str) -> None:
    huge = "A" * 65536
    values = {
        "client": {"client": (huge, 1)},
        "method": {"method": huge},
        "raw_path": {"raw_path": b"/" + huge.encode()},
    }[field]
    text = line(query_string=b"q=" + b"x" * 65536, **values)
    assert len(text) <= MAX_LINE_CHARS
    assert "...(+" in text  # says that it was cut, and by how much


def test_the_worst_case_stays_within_the_bound() -> None:
    huge = "\x00" * 65536  # each escaped to 4 characters
    text = line(
        seconds=99999.0,
        status=599,
        client=(huge, 65535),
        method=huge,
        raw_path=huge.encode("latin-1"),
        query_string=b"x",
    )
    assert len(text) <= MAX_LINE_CHARS, len(text)


def test_no_client_and_no_answer() -> None:
    assert line(client=None, status=None).startswith('- - "GET /healthz HTTP/1.1" - ')


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain-ASCII_1.2", "plain-ASCII_1.2"),
        ('a"b\\c', "a\\x22b\\x5cc"),
        ("tab\there\r\n", "tab\\x09here\\x0d\\x0a"),
        ("nbsp\xa0\x85", "nbsp\\xa0\\x85"),
        ("\u2028\U0001f600", "\\u2028\\U0001f600"),
    ],
)
def test_printable_escapes_what_is_not_visible_ascii(text: str, shown: str) -> None:
    assert printable(text, 100) == shown


def test_printable_cuts_and_counts() -> None:
    assert printable("x" * 30, 10) == "x" * 10 + "...(+20 chars)"


def test_one_line_per_request_in_the_app(
    serve: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = serve(access_log=True)
    with caplog.at_level(logging.INFO, logger="app.access"):
        client.get("/healthz?token=s3cr3t-value")
        refused = client.get("/bulk/" + "f" * 40)
    lines = [r.getMessage() for r in caplog.records if r.name == "app.access"]
    assert len(lines) == 2, lines
    assert '"GET /healthz?<redacted> HTTP/1.1" 200 ' in lines[0]
    assert refused.status_code >= 400
    assert lines[1].split('" ')[1].startswith(f"{refused.status_code} ")  # the status sent
    assert not any("s3cr3t" in text for text in lines)  # (the test client logs its own URL)


def test_access_log_off(serve: Callable[..., TestClient], caplog: pytest.LogCaptureFixture) -> None:
    client = serve(access_log=False)
    with caplog.at_level(logging.INFO, logger="app.access"):
        client.get("/healthz")
    assert [r for r in caplog.records if r.name == "app.access"] == []


class CountingText(str):
    """A str that counts the characters read from it."""

    read = 0

    def __iter__(self):  # type: ignore[override]
        for char in str.__iter__(self):
            CountingText.read += 1
            yield char


def test_printable_reads_only_what_it_shows() -> None:
    # A 64 KB header costs the same as a short one: the cut comes before the escaping.
    CountingText.read = 0
    assert printable(CountingText("A" * 65536), 100).endswith("...(+65436 chars)")
    assert CountingText.read <= 101
