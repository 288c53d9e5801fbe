"""The client side of the stall benchmark: /healthz at a fixed rate, releases back to back, and
the bulk posts that grow the heap first. Plain http.client on loopback, one thread each.

Latency is counted from the moment a probe was due, not from when it was sent: a loop stalled
for 80 ms delays every probe due in those 80 ms, and a client that only timed the probes it
managed to send would report one slow answer and hide the rest (coordinated omission).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app.workload.load import payloads
from scripts.verify.core.errors import RunNotMade

REQUEST_TIMEOUT_S = 10.0
BULK_TIMEOUT_S = 120.0
RELEASES_METRIC = "memory_releases_total"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    token: str

    @classmethod
    def of(cls, base_url: str, token: str) -> Endpoint:
        host, _, port = base_url.removeprefix("http://").partition(":")
        return cls(host, int(port), token)

    def connect(self, timeout: float = REQUEST_TIMEOUT_S) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class ProbeRecord:
    """Seconds from each probe's due time to its answer (``latencies_s``) and from its send to
    its answer (``service_s``, what one lone probe would see); failures are counted, not timed."""

    latencies_s: list[float] = field(default_factory=list)
    service_s: list[float] = field(default_factory=list)
    errors: int = 0
    last_error: str | None = None


class HealthzProbe:
    """``count`` GETs of /healthz, one every ``interval_s``, on one keep-alive connection."""

    def __init__(self, endpoint: Endpoint, count: int, interval_s: float, warmup: int = 20):
        self.endpoint = endpoint
        self.count = count
        self.interval_s = interval_s
        self.warmup = warmup
        self.record = ProbeRecord()

    def run(self, stop: threading.Event | None = None) -> ProbeRecord:
        """Probe ``count`` times, or until ``stop`` is set (a probe for as long as a load runs)."""
        conn = self.endpoint.connect()
        try:
            for _ in range(self.warmup):  # connection open, first-request paths warm
                self._get(conn)
            start = time.perf_counter()
            for i in range(self.count):
                if stop is not None and stop.is_set():
                    break
                due = start + i * self.interval_s
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                sent = time.perf_counter()
                try:
                    status = self._get(conn)
                except (OSError, http.client.HTTPException) as exc:
                    self.record.errors += 1
                    self.record.last_error = f"{type(exc).__name__}: {exc}"
                    conn.close()
                    conn = self.endpoint.connect()
                    continue
                if status == 200:
                    answered = time.perf_counter()
                    self.record.latencies_s.append(answered - due)
                    self.record.service_s.append(answered - sent)
                else:
                    self.record.errors += 1
                    self.record.last_error = f"HTTP {status}"
        finally:
            conn.close()
        return self.record

    @staticmethod
    def _get(conn: http.client.HTTPConnection) -> int:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status


class ReleaseDriver:
    """POSTs ``path`` back to back on its own thread until stopped, a new release starting at
    most every ``every_s``, keeping what each release reported (its duration as the service
    timed it, and the bytes it freed)."""

    def __init__(self, endpoint: Endpoint, path: str, every_s: float = 0.0) -> None:
        self.endpoint = endpoint
        self.path = path
        self.every_s = every_s
        self.durations_s: list[float] = []
        self.freed_bytes: list[int] = []
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="release-driver", daemon=True)

    def start(self) -> ReleaseDriver:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the release in flight, which the service finishes anyway."""
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        conn = self.endpoint.connect(timeout=60)
        try:
            next_start = time.perf_counter()
            while not self._stop.wait(max(next_start - time.perf_counter(), 0.0)):
                next_start = time.perf_counter() + self.every_s
                try:
                    conn.request("POST", self.path, headers=self.endpoint.auth)
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._failed(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = self.endpoint.connect(timeout=60)
                    continue
                if response.status != 200:
                    self._failed(f"HTTP {response.status}: {body[:200]!r}")
                    continue
                result = json.loads(body)
                self.durations_s.append(float(result["duration_seconds"]))
                self.freed_bytes.append(int(result["freed_bytes"]))
        finally:
            conn.close()

    def _failed(self, why: str) -> None:
        self.errors += 1
        self.last_error = why
        if self.errors >= 5:  # a closed or broken endpoint: the condition cannot be made
            self._stop.set()


def grow_heap(endpoint: Endpoint, posts: int, records: int, concurrency: int) -> None:
    """``posts`` bulk submits of ``records`` records, ``concurrency`` at a time, alternating
    the sync (threadpool) and async (event loop) paths, as a spike would; RunNotMade unless
    every one is accepted."""
    bodies = [payloads.body(records, variant) for variant in range(payloads.VARIANTS)]

    def submit(i: int) -> str | None:
        path = "/bulk/sync" if i % 2 else "/bulk/async"
        conn = endpoint.connect(timeout=BULK_TIMEOUT_S)
        try:
            conn.request(
                "POST",
                path,
                body=bodies[i % len(bodies)],
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            text = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return f"{path}: {type(exc).__name__}: {exc}"
        finally:
            conn.close()
        return None if response.status == 201 else f"{path}: HTTP {response.status} {text[:120]!r}"

    with ThreadPoolExecutor(concurrency, thread_name_prefix="grow") as pool:
        failures = [why for why in pool.map(submit, range(posts)) if why]
    if failures:
        raise RunNotMade(f"{len(failures)} of {posts} bulk posts failed: {failures[0]}")


def releases_total(endpoint: Endpoint) -> int:
    """The service's own count of releases so far (every trigger), from /metrics."""
    conn = endpoint.connect()
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
    except (OSError, http.client.HTTPException) as exc:
        raise RunNotMade(f"/metrics unreadable: {exc}") from exc
    finally:
        conn.close()
    if response.status != 200:
        raise RunNotMade(f"/metrics answered {response.status}")
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(RELEASES_METRIC + "{")
        )
    )
