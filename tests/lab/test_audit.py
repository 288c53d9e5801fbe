"""The dependency audit against a real HTTP index on loopback serving made-up documents: a release
document with a vulnerability, a mirror that serves only project documents, a pin behind the
latest release, an index that is down."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lab import audit

# path -> (status, body); anything else is a 404
DOCUMENTS: dict[str, tuple[int, bytes]] = {
    # a release document with an advisory, as the index serves it
    "/oldlib/1.0/json": (
        200,
        json.dumps(
            {
                "info": {"version": "1.0"},
                "vulnerabilities": [{"id": "PYSEC-1", "fixed_in": ["1.1"]}],
            }
        ).encode(),
    ),
    "/oldlib/json": (200, json.dumps({"info": {"version": "1.1"}, "vulnerabilities": []}).encode()),
    # a mirror with project documents only: an empty 200 for the release document
    "/fresh/2.0/json": (200, b""),
    "/fresh/json": (200, json.dumps({"info": {"version": "2.0"}, "vulnerabilities": []}).encode()),
    "/behind/json": (200, json.dumps({"info": {"version": "3.1"}, "vulnerabilities": []}).encode()),
    "/latest-bad/json": (
        200,
        json.dumps({"info": {"version": "4.0"}, "vulnerabilities": [{"id": "GHSA-x"}]}).encode(),
    ),
}


class Index(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status, body = DOCUMENTS.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def index() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_release_document_with_an_advisory_fails_the_audit(index: str) -> None:
    report = audit.run({"oldlib": "1.0"}, index, timeout=5)
    (finding,) = report.vulnerable
    assert finding.vulnerabilities == ("PYSEC-1 (fixed in 1.1)",)
    assert report.exit_code() == audit.EXIT_VULNERABLE
    assert "VULNERABLE oldlib==1.0: PYSEC-1 (fixed in 1.1)" in audit.render(report)


def test_a_pin_that_is_the_latest_is_audited_from_the_project_document(index: str) -> None:
    report = audit.run({"fresh": "2.0"}, index, timeout=5)
    (finding,) = report.findings
    assert finding.source.startswith("project document")
    assert report.exit_code() == audit.EXIT_CLEAN


def test_the_latest_release_with_an_open_advisory_fails_the_audit(index: str) -> None:
    report = audit.run({"latest-bad": "4.0"}, index, timeout=5)
    assert report.vulnerable[0].vulnerabilities == ("GHSA-x (no fix)",)
    assert report.exit_code() == audit.EXIT_VULNERABLE


def test_a_pin_behind_the_latest_on_such_a_mirror_is_not_audited(index: str) -> None:
    report = audit.run({"behind": "3.0", "fresh": "2.0"}, index, timeout=5)
    (finding,) = report.not_audited
    assert finding.name == "behind" and "3.1" in (finding.not_audited or "")
    assert report.exit_code() == audit.EXIT_NOT_AUDITED


def test_a_package_the_index_does_not_have_is_not_audited(index: str) -> None:
    report = audit.run({"nowhere": "1.0"}, index, timeout=5)
    assert report.not_audited[0].not_audited == "not on the index"


def test_an_unreachable_index_is_not_audited_rather_than_clean() -> None:
    report = audit.run({"fresh": "2.0"}, "http://127.0.0.1:9", timeout=5)
    assert "unreachable" in (report.not_audited[0].not_audited or "")
    assert report.exit_code() == audit.EXIT_NOT_AUDITED


def test_pins_are_read_from_both_locks_with_canonical_names(tmp_path: Path) -> None:
    runtime = tmp_path / "a.lock"
    runtime.write_text("Pydantic_Core==2.50.5 \\\n    --hash=sha256:ab\n    # via x\n")
    dev = tmp_path / "b.lock"
    dev.write_text(
        "pydantic-core==2.50.5 \\\n    --hash=sha256:ab\n"
        "zope.interface==8.0 ; sys_platform == 'linux'\n"
        "uvicorn[standard]==0.54.0 \\\n    --hash=sha256:cd\n"
    )
    assert audit.read_pins([runtime, dev]) == {
        "pydantic-core": "2.50.5", "zope-interface": "8.0", "uvicorn": "0.54.0"
    }


def test_the_real_lock_files_have_pins() -> None:
    pins = audit.read_pins(list(audit.DEFAULT_LOCKS))
    assert {"fastapi", "uvicorn", "psutil", "locust", "psycopg"} <= set(pins)


def test_a_missing_lock_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        audit.main([str(tmp_path / "nope.lock")])
    assert info.value.code == 2
    assert "no such lock file" in capsys.readouterr().err
