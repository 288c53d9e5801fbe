"""Memory samples, taken once a second on a thread while the run goes on.

A sample sums the whole server tree (uvicorn's supervisor and its workers): the memory a
platform bills is all of it. PSS is the sum that counts shared library pages once across
workers; RSS summed over workers counts them again for every worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import psutil

from app.memory.smaps import read_rollup

log = logging.getLogger("verify.sampling")

METRICS = ("rss", "pss", "uss", "cgroup")
LOCAL_SERIES = "server"


@dataclass(frozen=True)
class Sample:
    """One reading at ``t`` seconds on the run's clock. Bytes; None where not measured."""

    t: float
    series: str = LOCAL_SERIES  # the server locally; one replica (or worker) remotely
    rss_bytes: int | None = None
    pss_bytes: int | None = None
    uss_bytes: int | None = None
    cgroup_usage_bytes: int | None = None
    cgroup_working_set_bytes: int | None = None
    processes: int | None = None
    # Processes of the tree that ended so far while its root ran: workers a server replaced,
    # each taking its cache and whatever else it held with it.
    processes_exited: int | None = None

    def value(self, metric: str) -> int | None:
        """The figure a verdict is made on: rss, pss, uss, or cgroup (the working set, which is
        usage minus reclaimable page cache, as `docker stats` shows it)."""
        if metric == "cgroup":
            return self.cgroup_working_set_bytes or self.cgroup_usage_bytes
        value: int | None = getattr(self, f"{metric}_bytes")
        return value

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Sample:
        """A sample from its JSON form; keys this version does not know are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def tree_processes(root_pid: int) -> list[psutil.Process]:
    """The root and every descendant still alive."""
    root = psutil.Process(root_pid)
    return [root, *root.children(recursive=True)]


class ExitCensus:
    """Counts the processes of a tree that ended between one sample and the next.

    Server-agnostic: a uvicorn worker restarted after LIMIT_MAX_REQUESTS and a Granian worker
    respawned over its RSS limit both show up as a pid that was there and is gone. A process
    born and ended between two samples (under a second at the default interval) is not seen.
    """

    def __init__(self) -> None:
        self._alive: set[int] = set()
        self.exited = 0

    def observe(self, pids: Iterable[int]) -> int:
        now = set(pids)
        self.exited += len(self._alive - now)
        self._alive = now
        return self.exited


def exited_during(samples: Iterable[Sample]) -> int | None:
    """How many of the tree's processes ended over these samples; None where not counted."""
    counts = [s.processes_exited for s in samples if s.processes_exited is not None]
    return max(counts) - min(counts) if counts else None


def tree_sample(root_pid: int, t: float, census: ExitCensus | None = None) -> Sample:
    """RSS, PSS and USS of a process tree, summed; psutil.NoSuchProcess once the root is gone.

    A worker exiting between listing and reading is skipped, not fatal: uvicorn replaces workers.
    With ``census``, also how many of the tree's processes have ended so far.
    """
    rss = pss = uss = 0
    have_full = True
    counted = 0
    processes = tree_processes(root_pid)
    for process in processes:
        try:
            process_rss = int(process.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            if process.pid == root_pid:
                raise
            continue
        except psutil.Error:
            continue
        rss += process_rss
        counted += 1
        # PSS and USS from /proc/<pid>/smaps_rollup, as the memory package reads its own (psutil
        # deprecates memory_full_info() for 8.0); None where it cannot be read (another user's).
        rollup = read_rollup(process.pid)
        if rollup is None:
            have_full = False
            continue
        pss += rollup.pss_bytes
        uss += rollup.uss_bytes
    return Sample(
        t=t,
        rss_bytes=rss,
        pss_bytes=pss if have_full and pss else None,
        uss_bytes=uss if have_full and uss else None,
        processes=counted,
        processes_exited=census.observe(p.pid for p in processes) if census else None,
    )


class Clock:
    """Seconds since the run began (monotonic), plus the wall-clock time it began."""

    def __init__(self) -> None:
        self.started_monotonic = time.monotonic()
        self.started_wall = time.time()

    def now(self) -> float:
        return round(time.monotonic() - self.started_monotonic, 3)


Probe = Callable[[float], Iterable[Sample]]


class Sampler:
    """Calls ``probe`` every ``interval`` seconds on a daemon thread and keeps what it returns.

    Ticks follow a fixed schedule (not sleep-after-work), so a slow probe does not stretch the
    timeline; a tick that cannot be kept is skipped. A probe error is counted and logged once.
    """

    def __init__(self, probe: Probe, clock: Clock, interval: float = 1.0) -> None:
        self.probe = probe
        self.clock = clock
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(timeout=10 * self.interval + 5)
        return self.snapshot()

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def latest(self) -> Sample | None:
        with self._lock:
            return self.samples[-1] if self.samples else None

    def sample_now(self) -> None:
        t = self.clock.now()
        try:
            taken = list(self.probe(t))
        except Exception as exc:  # a probe may fail any way; the run goes on
            self.errors += 1
            if self.last_error is None:
                log.warning("memory sample failed at %.1f s: %s", t, exc)
            self.last_error = str(exc)
            return
        with self._lock:
            self.samples.extend(taken)

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self.sample_now()
            next_tick += self.interval
            now = time.monotonic()
            while next_tick < now:  # fell behind: skip the ticks already missed
                next_tick += self.interval
            self._stop.wait(next_tick - now)
