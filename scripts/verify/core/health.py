"""/healthz while the spike runs: does the event loop keep answering under the bulk work?

A liveness probe, a metrics scrape and every light request wait behind whatever holds the loop;
Kubernetes' default liveness probe gives up after 1 s. One thread probes at a fixed rate on one
keep-alive connection, and each latency counts from when the probe was due, not when it was
sent: a loop held for 300 ms delays every probe due in that time (no coordinated omission).
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from scripts.verify.core.percentile import percentile

PROBE_INTERVAL_SECONDS = 0.05
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class HealthFigures:
    """Milliseconds from each probe's due time to its 200; ``errors``: probes without one."""

    probes: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def of(cls, latencies_s: list[float], errors: int) -> HealthFigures:
        if not latencies_s:
            return cls(0, None, None, None, errors)
        ordered = sorted(v * 1000 for v in latencies_s)
        return cls(
            len(ordered), percentile(ordered, 0.50), percentile(ordered, 0.99), ordered[-1], errors
        )


@dataclass
class HealthProbe:
    """GET /healthz every ``interval_s`` from start() to stop(), on a thread of its own."""

    base_url: str
    path: str = "/healthz"  # the service's health path (--health)
    interval_s: float = PROBE_INTERVAL_SECONDS
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-probe", daemon=True)

    def start(self) -> HealthProbe:
        self._thread.start()
        return self

    def stop(self) -> HealthFigures:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT_SECONDS + 1)
        return HealthFigures.of(list(self.latencies_s), self.errors)

    def _connect(self) -> http.client.HTTPConnection:
        url = urlsplit(self.base_url)
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        return kind(url.netloc, timeout=TIMEOUT_SECONDS)

    def _run(self) -> None:
        conn = self._connect()
        due = time.perf_counter()
        try:
            while not self._stop.wait(max(due - time.perf_counter(), 0.0)):
                try:
                    conn.request("GET", self.path)
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = self._connect()
                if ok:
                    self.latencies_s.append(time.perf_counter() - due)
                else:
                    self.errors += 1
                # The next probe is due one interval after this one was; a late answer makes
                # the probes due meanwhile go out at once, each timed from its own due time.
                due += self.interval_s
        finally:
            conn.close()
