"""SIGTERM and SIGKILL under write load, on real server processes.

A submission answered with 201 has its row committed (WAL) before the answer, so it must survive
both a graceful stop and a kill -9; requests caught by a stop either finish or fail at the
connection, never with a 5xx; and the service starts again on the same database file.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.integration.conftest import Server
from tests.integration.test_memory import bulk_body

GRACE_SECONDS = 3
EXIT_MARGIN_SECONDS = 5.0  # interpreter teardown and the cleanup loop's stop, on a loaded box
THREADS = 4
RECORDS = 3000  # ~0.1 s of server work per request: requests are in flight at any moment
ACKS_BEFORE_SIGNAL = 40
JSON = {"content-type": "application/json"}


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: the connection failed
    error: str | None = None


@dataclass
class Load:
    """Threads posting bulk bodies on both paths until stopped or their connection fails."""

    server: Server
    outcomes: list[Outcome] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        bodies = [bulk_body(RECORDS, seed) for seed in range(THREADS)]
        for index in range(THREADS):
            thread = threading.Thread(target=self._post, args=(index, bodies[index]), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _post(self, index: int, body: bytes) -> None:
        path = ("/bulk/sync", "/bulk/async")[index % 2]
        with httpx.Client(base_url=self.server.url, timeout=30.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post(path, content=body, headers=JSON)
                except httpx.TransportError as exc:
                    self._record(Outcome(started, time.monotonic(), None, type(exc).__name__))
                    return  # the server is going away: stop like a client would
                outcome = Outcome(started, time.monotonic(), response.status_code)
                self._record(outcome, response.json()["id"] if outcome.status == 201 else None)

    def _record(self, outcome: Outcome, submission_id: str | None = None) -> None:
        with self._lock:
            self.outcomes.append(outcome)
            if submission_id is not None:
                self.acknowledged.append(submission_id)

    def wait_for_acks(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} of {count} acks"
            assert all(o.status in (201, None) for o in self.outcomes), self.statuses()
            time.sleep(0.01)

    def join(self, timeout: float = 60.0) -> None:
        """Wait for every thread to end on its own (the server is gone), then stop the rest."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))
        self._stop.set()
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"

    def statuses(self) -> Counter[int | str]:
        return Counter(o.status if o.status is not None else o.error or "?" for o in self.outcomes)


WAL_HEADER_BYTES = 32


def wal_bytes(wal: Path) -> int:
    try:
        return wal.stat().st_size
    except FileNotFoundError:
        return 0


def freeze_mid_write(process: subprocess.Popen[bytes], wal: Path, timeout: float = 20.0) -> None:
    """Stop the server (SIGSTOP) at a moment its write-ahead log holds commits not yet
    checkpointed into the database file. The last connection to close checkpoints and deletes
    the log, so frames there mean work in progress; a stopped process cannot change that."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, "never caught the log holding commits"
        if wal_bytes(wal) > WAL_HEADER_BYTES:
            process.send_signal(signal.SIGSTOP)
            if wal_bytes(wal) > WAL_HEADER_BYTES:
                return
            process.send_signal(signal.SIGCONT)
        time.sleep(0.001)


def database_state(path: Path) -> tuple[str, set[str]]:
    """(PRAGMA integrity_check, submission ids), opened as a fresh process would: a WAL left
    behind by a killed writer is recovered on this open."""
    conn = sqlite3.connect(path)
    try:
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
        ids = {row[0] for row in conn.execute("SELECT id FROM submissions")}
    finally:
        conn.close()
    return str(check), ids


def restart_and_write(server_factory: Callable[..., Server], database: Path) -> set[str]:
    """The service on the same file again: healthy, accepting writes; the ids afterwards."""
    again = server_factory()
    created = again.client.post("/bulk/async", content=bulk_body(10, 99), headers=JSON)
    assert created.status_code == 201, created.text
    check, ids = database_state(database)
    assert check == "ok"
    assert created.json()["id"] in ids
    again.stop()
    return ids


def test_sigterm_under_load_drains_and_keeps_every_acknowledged_write(
    server_factory: Callable[..., Server],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    server = server_factory(SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS))
    database = tmp_path / "service.db"
    load = Load(server)
    load.start()
    load.wait_for_acks(ACKS_BEFORE_SIGNAL)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(GRACE_SECONDS + EXIT_MARGIN_SECONDS)
    stopped_in = time.monotonic() - signalled
    load.join()

    statuses = load.statuses()
    assert set(statuses) - {201} <= {"ConnectError", "RemoteProtocolError", "ReadError",
                                     "WriteError"}, statuses
    failed = [o for o in load.outcomes if o.status is None]
    assert all(o.ended >= signalled for o in failed), "a request failed before the signal"
    drained = [o for o in load.outcomes if o.status == 201 and o.started < signalled < o.ended]
    assert drained, "no request in flight at the signal was finished"
    assert code in (0, -signal.SIGTERM)
    log = server.log()
    assert "[memory-cleanup] Stopped" in log and "Application shutdown complete" in log
    assert "Traceback" not in log

    check, ids = database_state(database)
    assert check == "ok"
    missing = set(load.acknowledged) - ids
    assert not missing, f"{len(missing)} acknowledged submissions lost"
    after_restart = restart_and_write(server_factory, database)
    assert set(load.acknowledged) <= after_restart

    record_property("shutdown_seconds", round(stopped_in, 2))
    record_property("acknowledged", len(load.acknowledged))
    record_property("drained_in_flight", len(drained))
    record_property("statuses", dict(statuses))
    record_property("rows", len(ids))


def test_sigkill_mid_write_loses_no_acknowledged_write(
    server_factory: Callable[..., Server],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    server = server_factory()
    database = tmp_path / "service.db"
    load = Load(server)
    load.start()
    load.wait_for_acks(ACKS_BEFORE_SIGNAL)
    wal = database.with_name(database.name + "-wal")
    freeze_mid_write(server.process, wal)
    killed = time.monotonic()
    server.process.kill()
    server.process.wait(10)
    load.join()
    left = wal_bytes(wal)
    assert left > WAL_HEADER_BYTES  # commits not yet in the database file: the open recovers

    statuses = load.statuses()
    assert set(statuses) - {201} <= {"RemoteProtocolError", "ReadError", "WriteError",
                                     "ConnectError"}, statuses
    assert all(o.ended >= killed for o in load.outcomes if o.status is None)
    assert server.process.returncode == -signal.SIGKILL
    check, ids = database_state(database)
    assert check == "ok"
    missing = set(load.acknowledged) - ids
    assert not missing, f"{len(missing)} acknowledged submissions lost"
    after_restart = restart_and_write(server_factory, database)
    assert set(load.acknowledged) <= after_restart

    record_property("acknowledged", len(load.acknowledged))
    record_property("rows", len(ids))
    record_property("wal_bytes_left", left)
    record_property("statuses", dict(statuses))
