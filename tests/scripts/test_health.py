"""/healthz during the spike: figures from due time, a stalling server, the report's columns."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from scripts.verify.core.health import HealthFigures, HealthProbe
from scripts.verify.core.report import Row, render_markdown

STALL_SECONDS = 0.3


def test_figures_are_nearest_rank_milliseconds() -> None:
    figures = HealthFigures.of([i / 1000 for i in range(1, 101)], errors=2)
    assert (figures.probes, figures.p50_ms, figures.p99_ms, figures.max_ms) == (100, 50, 99, 100)
    assert figures.errors == 2
    assert HealthFigures.of([], 3) == HealthFigures(0, None, None, None, 3)


class StallOnce(BaseHTTPRequestHandler):
    """Answers /healthz at once, except the tenth request, held STALL_SECONDS."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the probe uses it
    served = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).served += 1
        if type(self).served == 10:
            time.sleep(STALL_SECONDS)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stalling_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), StallOnce)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_stall_delays_every_probe_due_during_it(stalling_url: str) -> None:
    probe = HealthProbe(stalling_url, interval_s=0.02).start()
    deadline = time.monotonic() + 10
    while len(probe.latencies_s) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    figures = probe.stop()
    assert figures.errors == 0 and figures.probes >= 40
    assert figures.max_ms is not None and figures.max_ms >= STALL_SECONDS * 1000
    # The probes due while the one was held count their wait too, not just the held one.
    late = [v for v in probe.latencies_s if v >= STALL_SECONDS / 2]
    assert len(late) >= 5


def test_an_unreachable_service_counts_errors() -> None:
    probe = HealthProbe("http://127.0.0.1:9", interval_s=0.02).start()
    time.sleep(0.2)
    figures = probe.stop()
    assert figures.probes == 0 and figures.errors >= 1


def test_the_report_shows_healthz_columns_when_measured() -> None:
    def row(healthz: HealthFigures | None) -> Row:
        figures = [50.0, 300.0, 60.0, 0.8, 10.0, 1.2, 8.0, 20.0, 90.0, 900.0]
        return Row("jemalloc", *figures, failures=0, status="PASS", healthz=healthz)

    measured = render_markdown([row(HealthFigures(900, 5, 40, 120))])
    assert "/healthz p50 ms" in measured.splitlines()[0]
    assert "/healthz max ms" in measured.splitlines()[0]
    assert "| 5 | 40 | 120 | PASS |" in measured
    assert "/healthz" not in render_markdown([row(None)])
