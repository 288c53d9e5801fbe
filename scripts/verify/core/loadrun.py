"""Locust as a separate process, and the figures read back from its CSV statistics.

Locust's gevent monkey-patches the interpreter it runs in, so it never shares a process with the
server or the sampler; its own summary table goes to a log file, the verifier reads the CSV.
The users are the ones the workload declares (app/load.py, read by scripts.verify.core.declared)
or the user's own locustfile, either run under the same spike shape (loadtest/shape.py). What is
counted by name (heavy requests, read-backs) is what the users declare; a --locustfile declares
nothing, so only its requests as a whole are judged.
"""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from app.load import LocustUsers
from loadtest.spike import SpikePlan
from scripts.verify.core.declared import locust_files
from scripts.verify.core.errors import RunNotMade

REPO_ROOT = Path(__file__).resolve().parents[3]
# A scenario whose every request failed for this long into the load cannot reach the service:
# the run stops there, with the failures, rather than after the whole spike.
UNREACHABLE_SECONDS = 5.0
UNREACHABLE_MIN_REQUESTS = 5
SHOWN_FAILURES = 3  # the most frequent kinds named in the reason


@dataclass(frozen=True)
class LoadStats:
    """Locust's aggregated figures: milliseconds, and requests per second over the load."""

    requests: int
    failures: int
    requests_per_second: float
    p50_ms: float | None
    p99_ms: float | None
    bulk_submits: int  # the declared heavy requests (LocustUsers.heavy_names); the name is kept
    bulk_failures: int
    readbacks: int = 0  # reads of a result the client was handed (LocustUsers.readback_names)
    readbacks_lost: int = 0  # of those, 404 while the result was inside its TTL

    @property
    def failure_share(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def lost_share(self) -> float | None:
        """State dropped, as a client sees it: the share of its read-backs the service had lost."""
        return self.readbacks_lost / self.readbacks if self.readbacks else None

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "failure_share": self.failure_share, "lost_share": self.lost_share}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LoadStats:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def locust_available() -> bool:
    return importlib.util.find_spec("locust") is not None


def locust_argv(
    host: str,
    plan: SpikePlan,
    csv_prefix: Path,
    users: LocustUsers,
    options: Sequence[str] = (),
    cache_ttl_seconds: float | None = None,
) -> list[str]:
    """The command line: the spike without its idle window, which the verifier waits out itself
    (Locust's clock starts a second or two after the process, the verifier's does not).

    ``options`` are the users' own for this load (their declared spike or warm-up options; none
    for a --locustfile). ``cache_ttl_seconds`` is the service's own (from its status route),
    given with the users' ``ttl_option`` where they declare one; None leaves their default."""
    ttl = (
        [users.ttl_option, f"{cache_ttl_seconds:g}"]
        if users.ttl_option and cache_ttl_seconds
        else []
    )
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        locust_files(users),
        "--headless",
        "--host",
        host,
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--spike-users",
        str(plan.users),
        "--spike-spawn-rate",
        f"{plan.effective_spawn_rate:g}",
        "--spike-ramp",
        f"{plan.ramp_seconds:g}",
        "--spike-hold",
        f"{plan.hold_seconds:g}",
        "--spike-idle",
        "0",
        *options,
        *ttl,
    ]


def start_locust(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Locust in its own process, its output in ``log_path``."""
    if not locust_available():
        raise RunNotMade("Locust is not installed in this interpreter (pip install locust)")
    log_handle = log_path.open("wb")
    try:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    finally:
        log_handle.close()


def _number(raw: str | None) -> float | None:
    if raw in (None, "", "N/A"):
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def read_stats(stats_csv: Path, users: LocustUsers | None = None) -> LoadStats:
    """The Aggregated row of <prefix>_stats.csv, plus the counts of what ``users`` name: their
    heavy requests and their read-backs (zero for users that name none)."""
    try:
        with stats_csv.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise RunNotMade(f"Locust wrote no statistics ({stats_csv}): {exc}") from exc
    aggregated = next((r for r in rows if r.get("Name") == "Aggregated"), None)
    if aggregated is None:
        raise RunNotMade(f"{stats_csv} has no Aggregated row")
    named = users or LocustUsers(Path())
    bulk = [r for r in rows if r.get("Name") in named.heavy_names]
    readbacks = [r for r in rows if r.get("Name") in named.readback_names]
    return LoadStats(
        requests=int(aggregated["Request Count"]),
        failures=int(aggregated["Failure Count"]),
        requests_per_second=_number(aggregated.get("Requests/s")) or 0.0,
        p50_ms=_number(aggregated.get("50%")),
        p99_ms=_number(aggregated.get("99%")),
        bulk_submits=sum(int(r["Request Count"]) for r in bulk),
        bulk_failures=sum(int(r["Failure Count"]) for r in bulk),
        readbacks=sum(int(r["Request Count"]) for r in readbacks),
        readbacks_lost=sum(
            int(r["Request Count"]) for r in readbacks if r["Name"] == named.lost_name
        ),
    )


def failure_kinds(failures_csv: Path, most: int = SHOWN_FAILURES) -> str:
    """The most frequent failures Locust recorded, as "POST /x: 404 ... (12x)"; "" if none."""
    try:
        with failures_csv.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return ""
    rows.sort(key=lambda r: -(_number(r.get("Occurrences")) or 0))
    return "; ".join(
        f"{r.get('Method')} {r.get('Name')}: {r.get('Error')} ({r.get('Occurrences')}x)"
        for r in rows[:most]
    )


def unreachable(csv_prefix: Path, load_seconds: float) -> str | None:
    """Why the scenario cannot reach the service, once every request of the first
    UNREACHABLE_SECONDS of load has failed; None while some succeed (or too few were sent)."""
    if load_seconds < UNREACHABLE_SECONDS:
        return None
    try:
        stats = read_stats(Path(f"{csv_prefix}_stats.csv"))
    except RunNotMade:
        return None  # Locust has not written its first statistics yet
    if stats.requests < UNREACHABLE_MIN_REQUESTS or stats.failures < stats.requests:
        return None
    kinds = failure_kinds(Path(f"{csv_prefix}_failures.csv"))
    return (
        f"every request failed in the first {load_seconds:.0f} s of load ({stats.requests} sent)"
        + (f": {kinds}" if kinds else "")
    )


def check_delivered(
    stats: LoadStats, users: LocustUsers, failures_csv: Path | None = None
) -> None:
    """A run whose requests all failed made no spike: nothing was verified. Users that declare
    heavy requests must also have had one through: the spike they exist for."""
    kinds = failure_kinds(failures_csv) if failures_csv else ""
    if stats.requests - stats.failures <= 0:
        raise RunNotMade(
            f"no request succeeded ({stats.requests} sent, {stats.failures} failed)"
            + (f": {kinds}" if kinds else "")
        )
    if users.heavy_names and stats.bulk_submits - stats.bulk_failures <= 0:
        raise RunNotMade(
            f"no heavy request ({', '.join(users.heavy_names)}) succeeded "
            f"({stats.bulk_submits} sent, {stats.bulk_failures} failed): the spike was not "
            "delivered"
        )
