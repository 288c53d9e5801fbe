"""Slow bodies: clients that declare a large body and send it a little at a time, above any rate
floor, to hold what the service sets aside for it (`slowhttptest -B`, R-U-Dead-Yet), while a
legitimate client posts large bodies at its own pace.

The attack is Qualys's `slowhttptest -B` itself, against the first heavy request the workload
declares (app/load.py; the reference workload's sync route), each connection declaring
``declared_bytes`` and sending a random ``name=value`` pair of up to ``follow_bytes`` every
``interval`` seconds (about 1 KB a second with the defaults: above the body rate floor). The
legitimate client runs in a process of its own (not the one that launches the attack) and posts
that request's largest body, one at a time and at most one every ``every`` seconds, counting
each answer. One run counts the legitimate posts answered 201 without the flood, then with it: what
the flood takes from a real client, as counts; timings on a shared machine would say little.
"""

from __future__ import annotations

import multiprocessing
import queue
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.load import HeavyRequest
from app.memory.measure import MB
from scripts.verify.core.declared import heavy_requests
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.local import LocalServer
from scripts.verify.overload.run import CgroupPeaks, limited_server, reserved_bytes

HOST = "127.0.0.1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NO_TOOL = "slowhttptest is not installed (Debian: apt-get install slowhttptest)"


@dataclass(frozen=True)
class SlowBodySettings:
    attackers: int = 40  # slowhttptest -c
    declared_bytes: int = 7_000_000  # -s: the Content-Length each attacker declares
    follow_bytes: int = 1200  # -x: a random name=value pair of up to this size every interval
    interval: float = 1.0  # -i
    seconds: float = 20.0  # legitimate posts, per phase
    every: float = 1.0  # at most one legitimate post started per this many seconds
    limit_mb: float = 500.0
    web_concurrency: int = 1
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Posts:
    """What one phase's legitimate posts were answered: status -> count, and connection
    errors (no answer at all)."""

    statuses: dict[int, int]
    errors: int = 0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.errors

    @property
    def created(self) -> int:
        return self.statuses.get(201, 0)

    @property
    def share(self) -> float:
        return self.created / self.sent if self.sent else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "created": self.created,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "share": round(self.share, 4),
        }


@dataclass
class SlowBodyRun:
    profile: str
    settings: SlowBodySettings
    path: str
    body_bytes: int
    quiet: Posts  # without the flood
    flooded: Posts  # with it
    peak_reserved_bytes: int | None  # the in-flight budget reserved at most during the flood
    peak_usage_bytes: int
    oom_kills: int | None
    alive: bool
    attack_tail: str  # slowhttptest's last lines: its own account of the connections
    server_log: Path

    @property
    def attack_connected(self) -> int | None:
        """The connections slowhttptest last counted as open (connected, body unfinished)."""
        found = re.findall(r"^connected:\s+(\d+)", self.attack_tail, re.M)
        return int(found[-1]) if found else None

    def as_dict(self) -> dict[str, object]:
        s = self.settings
        return {
            "profile": self.profile,
            "server": s.overrides.get("SERVER", "uvicorn"),
            "path": self.path,
            "body_mb": round(self.body_bytes / MB, 2),
            "attackers": s.attackers,
            "declared_mb": round(s.declared_bytes / MB, 2),
            "follow_bytes": s.follow_bytes,
            "interval_s": s.interval,
            "seconds": s.seconds,
            "quiet": self.quiet.as_dict(),
            "flooded": self.flooded.as_dict(),
            "attack_connected": self.attack_connected,
            "peak_reserved_mb": None
            if self.peak_reserved_bytes is None
            else round(self.peak_reserved_bytes / MB, 1),
            "peak_usage_mb": round(self.peak_usage_bytes / MB, 1),
            "oom_kills": self.oom_kills,
            "alive": self.alive,
        }


def _post_loop(
    base_url: str,
    request: HeavyRequest,
    body: bytes,
    seconds: float,
    every: float,
    results: multiprocessing.Queue[Posts],
) -> None:
    statuses: Counter[int] = Counter()
    errors = 0
    end = time.monotonic() + seconds
    next_start = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        while next_start < end:
            time.sleep(max(0.0, next_start - time.monotonic()))
            next_start = time.monotonic() + every
            try:
                reply = client.request(
                    request.method, request.path, content=body,
                    headers={"content-type": request.content_type},
                )  # fmt: skip
                statuses[reply.status_code] += 1
            except httpx.HTTPError:
                errors += 1
    results.put(Posts(dict(statuses), errors))


class LegitimateClient:
    """Posts ``body`` as ``request`` for ``seconds``, from a process of its own."""

    def __init__(
        self, base_url: str, request: HeavyRequest, body: bytes, seconds: float, every: float
    ) -> None:
        # fork, before any thread of this run starts: spawn would run the caller's unguarded
        # __main__ (the verifier's CLI) again in the child.
        context = multiprocessing.get_context("fork")
        self._results: multiprocessing.Queue[Posts] = context.Queue()
        self._process = context.Process(
            target=_post_loop,
            args=(base_url, request, body, seconds, every, self._results),
            daemon=True,
        )
        self.seconds = seconds

    def start(self) -> None:
        self._process.start()

    def result(self) -> Posts:
        try:
            found = self._results.get(timeout=self.seconds + 120)
        except queue.Empty:
            found = Posts({}, errors=1)
        self._process.join(5)
        return found


def attack_argv(
    url: str, settings: SlowBodySettings, seconds: float, content_type: str
) -> list[str]:
    """`slowhttptest -B` with every connection opened in the first second."""
    tool = shutil.which("slowhttptest")
    if tool is None:
        raise RunNotMade(NO_TOOL)
    return [
        tool, "-B", "-c", str(settings.attackers), "-r", str(settings.attackers),
        "-i", f"{settings.interval:g}", "-x", str(settings.follow_bytes),
        "-s", str(settings.declared_bytes), "-t", "POST", "-f", content_type,
        "-l", str(int(seconds)), "-u", url,
    ]  # fmt: skip


def run_slow_bodies(
    profile: str,
    settings: SlowBodySettings,
    body: bytes,
    out: Path | None = None,
    quiet_phase: bool = True,
) -> SlowBodyRun:
    """One run; RunNotMade when the service cannot be started, no cgroup can be made or the
    attack tool is missing. ``quiet_phase=False`` skips the posts without the flood."""
    request = heavy_requests()[0]
    server, cgroup = limited_server(
        profile,
        f"slowbody-{settings.overrides.get('SERVER', 'uvicorn')}",
        settings.limit_mb,
        settings.web_concurrency,
        settings.overrides,
        out,
    )
    peaks = CgroupPeaks(cgroup, lambda: _reserved(server))
    attack: subprocess.Popen[str] | None = None
    try:
        server.start()
        server.wait_healthy(60)
        quiet = Posts({})
        if quiet_phase:
            legit = LegitimateClient(
                server.base_url, request, body, settings.seconds, settings.every
            )
            legit.start()
            quiet = legit.result()
        argv = attack_argv(
            f"{server.base_url}{request.path}",
            settings,
            settings.seconds + 5,
            request.content_type,
        )
        legit = LegitimateClient(server.base_url, request, body, settings.seconds, settings.every)
        attack = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(2 * settings.interval)  # every attacker connected and reserved
        peaks.start()
        legit.start()
        flooded = legit.result()
        peaks.stop.set()
        tail, _ = attack.communicate(timeout=settings.seconds + 60)  # it ends at its -l
        alive = server.exit_code() is None
        return SlowBodyRun(
            profile,
            settings,
            request.path,
            len(body),
            quiet,
            flooded,
            peaks.peak_other,
            peaks.peak_usage,
            cgroup.events().oom_kills,
            alive,
            "\n".join(ANSI.sub("", tail).strip().splitlines()[-12:]),
            server.log_path,
        )
    finally:
        peaks.stop.set()
        if attack is not None and attack.poll() is None:
            attack.kill()
            attack.wait()
        server.stop()
        cgroup.remove()


def _reserved(server: LocalServer) -> int | None:
    found = reserved_bytes(server)
    return None if found is None else int(found)
