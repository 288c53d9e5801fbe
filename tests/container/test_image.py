"""The built image, run as Railway runs it: a real --memory limit, $PORT, SIGTERM on redeploy.

Every deployable profile from profiles/profiles.toml gets its own container: the server must
answer on $PORT as a non-root user with the profile's allocator mapped, survive a load spike under
a 500 MB limit without an OOM kill, give memory back once idle, and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.profiles import Profile, load_profiles
from scripts.verify.core.docker_engine import Engine
from tests.conftest import RunSummary

if TYPE_CHECKING:
    from tests.container.conftest import Image

pytestmark = pytest.mark.container

MB = 1024 * 1024
LIMIT_BYTES = 500 * MB  # Railway's Free plan limit
CONTAINER_PORT = 8123  # not the image's default 8000, so serving on $PORT is proven
START_SECONDS = 60.0
SPIKE_REQUESTS = 40
SPIKE_CONCURRENCY = 8
SPIKE_SIZES = (5000, 10000, 15000, 20000)
IDLE_RELEASE_DEADLINE = 60.0
# After the spike, the idle container must leave this share of the limit free for the next one.
IDLE_MAX_SHARE_OF_LIMIT = 0.6
# ...and hold clearly less than at its peak: memory went back to the OS, not just stopped growing.
IDLE_MAX_SHARE_OF_PEAK_RSS = 0.9
STOP_SECONDS = 8  # docker stop sends SIGKILL after this; exit code 0 means SIGTERM sufficed
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|PRIVATE|CREDENTIAL|CERT", re.IGNORECASE)

DEPLOYABLE = [p.name for p in load_profiles().profiles.values() if p.deploy]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class CgroupMemory:
    """The container's memory cgroup as seen from inside it (v1 or v2), in bytes."""

    usage: int
    peak: int | None
    working_set: int
    oom_kills: int | None


@dataclass(frozen=True)
class ProcessMemory:
    rss: int
    peak_rss: int  # VmHWM: the most the process ever had resident


@dataclass
class Service:
    """One running container of the image under one profile."""

    engine: Engine
    name: str
    profile: Profile
    host_port: int
    admin_token: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.host_port}{path}"

    def exec(self, *cmd: str, check: bool = True) -> str:
        return self.engine.run("exec", self.name, *cmd, check=check, timeout=60).stdout

    def state(self) -> dict[str, Any]:
        out = self.engine.run("inspect", "--format", "{{json .State}}", self.name).stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def logs(self) -> str:
        done = self.engine.run("logs", self.name, check=False, timeout=60)
        return done.stdout + done.stderr

    def memory_status(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        response = httpx.get(self.url("/debug/memory"), headers=headers, timeout=30)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def cgroup(self) -> CgroupMemory:
        """Read with grep (not python) so the reader adds next to nothing to what it measures."""
        v2 = self.engine.run("exec", self.name, "test", "-f", "/sys/fs/cgroup/memory.current",
                             check=False).returncode == 0
        if v2:
            root = "/sys/fs/cgroup/"
            usage, peak = "memory.current", "memory.peak"
            stat, events, inactive = "memory.stat", "memory.events", "inactive_file"
        else:
            root = "/sys/fs/cgroup/memory/"
            usage, peak = "memory.usage_in_bytes", "memory.max_usage_in_bytes"
            stat, events, inactive = "memory.stat", "memory.oom_control", "total_inactive_file"
        out = self.exec("grep", "-H", ".", *(root + f for f in (usage, peak, stat, events)),
                        check=False)
        values = _grep_values(out)
        return CgroupMemory(
            usage=values[usage],
            peak=values.get(peak),
            working_set=values[usage] - values.get(f"{stat}:{inactive}", 0),
            oom_kills=values.get(f"{events}:oom_kill"),
        )

    def process(self) -> ProcessMemory:
        values = _grep_values(self.exec("grep", "-H", "-E", "^Vm(RSS|HWM):", "/proc/1/status"))
        return ProcessMemory(rss=values["status:VmRSS:"] * 1024,
                             peak_rss=values["status:VmHWM:"] * 1024)


def _grep_values(out: str) -> dict[str, int]:
    """`grep -H` output -> {"file": n} for one-number files, {"file:key": n} for key-value ones."""
    values: dict[str, int] = {}
    for line in out.splitlines():
        path, _, rest = line.partition(":")
        name = path.rsplit("/", 1)[-1]
        parts = rest.split()
        try:
            if len(parts) == 1:
                values[name] = int(parts[0])
            elif len(parts) >= 2:
                values[f"{name}:{parts[0]}"] = int(parts[1])
        except ValueError:
            continue
    return values


def _wait_healthy(service: Service) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(service.url("/healthz"), timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not service.state().get("Running"):
            break
        time.sleep(0.5)
    pytest.fail(f"{service.name} not healthy on $PORT; logs:\n{service.logs()[-3000:]}")


@pytest.fixture(scope="module", params=DEPLOYABLE)
def service(request: pytest.FixtureRequest, image: Image) -> Iterator[Service]:
    profile = load_profiles().get(request.param)
    svc = Service(
        engine=image.engine,
        name=f"lms-test-{profile.name}-{os.getpid()}",
        profile=profile,
        host_port=free_port(),
        admin_token=secrets.token_hex(16),
    )
    image.engine.run("rm", "-f", svc.name, check=False)
    image.engine.run(
        "run", "-d", "--name", svc.name,
        f"--memory={LIMIT_BYTES // MB}m", f"--memory-swap={LIMIT_BYTES // MB}m",
        "-e", f"MEMORY_PROFILE={profile.name}",
        "-e", f"PORT={CONTAINER_PORT}",
        "-e", f"ADMIN_TOKEN={svc.admin_token}",
        "-p", f"127.0.0.1:{svc.host_port}:{CONTAINER_PORT}",
        image.tag,
    )
    try:
        _wait_healthy(svc)
        yield svc
    finally:
        image.engine.run("rm", "-f", svc.name, check=False)


@functools.cache
def spike_bodies() -> tuple[bytes, ...]:
    """Valid bulk bodies of each size, encoded once; some SKUs unknown, as in real traffic."""
    rnd = random.Random(20250520)

    def record() -> dict[str, object]:
        return {
            "sku": f"SKU-{rnd.randrange(5200):05d}",
            "quantity": rnd.randint(1, 50),
            "unit_price": round(rnd.uniform(0.5, 500.0), 2),
            "customer": f"c-{rnd.randrange(1000)}",
            "tags": rnd.sample(["promo", "b2b", "retail", "eu"], rnd.randint(0, 2)),
            "note": "n" * rnd.randint(0, 120),
        }

    return tuple(
        json.dumps({"records": [record() for _ in range(size)]}).encode() for size in SPIKE_SIZES
    )


def run_spike(service: Service) -> list[int]:
    """40 bulk requests, 8 at a time, both endpoints and every size; returns the status codes."""
    bodies = spike_bodies()
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=180) as client, ThreadPoolExecutor(SPIKE_CONCURRENCY) as pool:

        def send(i: int) -> int:
            path = ("/bulk/sync", "/bulk/async")[i % 2]
            body = bodies[(i // 2) % len(bodies)]
            return client.post(service.url(path), content=body, headers=headers).status_code

        return list(pool.map(send, range(SPIKE_REQUESTS)))


def wait_idle_release(service: Service, since: float) -> dict[str, Any]:
    """Poll /debug/memory until an idle-triggered release started after `since` (epoch s)."""
    deadline = time.monotonic() + IDLE_RELEASE_DEADLINE
    while True:
        report = service.memory_status()
        idle = [r for r in report.get("releases") or []
                if r.get("trigger") == "idle" and float(r.get("started_at", 0)) >= since]
        if idle:
            return idle[-1]
        if time.monotonic() > deadline:
            pytest.fail(f"no idle release within {IDLE_RELEASE_DEADLINE:g} s after the spike; "
                        f"releases: {report.get('releases')}")
        time.sleep(1.0)


def test_healthz_answers_on_port(service: Service) -> None:
    response = httpx.get(service.url("/healthz"), timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthcheck_command_passes(service: Service) -> None:
    """The image's own HEALTHCHECK, run now rather than after its interval, on a custom $PORT."""
    raw = service.engine.run("inspect", "--format", "{{json .Config.Healthcheck.Test}}",
                             service.name).stdout
    test = json.loads(raw)
    assert test[0] == "CMD"
    done = service.engine.run("exec", service.name, *test[1:], check=False, timeout=30)
    assert done.returncode == 0, done.stderr


def test_server_is_pid1_and_not_root(service: Service) -> None:
    """uvicorn itself is PID 1 (the launcher exec'd it through app.serve, its command line, so
    SIGTERM reaches it) and runs with no root ids; the SQLite database was created in the
    writable /data."""
    status = service.exec("cat", "/proc/1/status")
    ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()
           if line.startswith(("Uid:", "Gid:"))}
    assert ids["Uid"] and all(int(i) != 0 for i in ids["Uid"]), ids
    assert all(int(i) != 0 for i in ids["Gid"]), ids
    cmdline = service.exec("cat", "/proc/1/cmdline").split("\0")
    assert "app.serve" in cmdline, cmdline
    assert "service.db" in service.exec("ls", "/data").split()


def test_profile_allocator_is_mapped(service: Service) -> None:
    maps = service.exec("cat", "/proc/1/maps")
    assert ("libjemalloc" in maps) == (service.profile.allocator == "jemalloc")
    report = service.memory_status()
    assert report["allocator"]["name"] == service.profile.allocator
    assert report["profile"] == service.profile.name


def test_spike_then_idle_stays_under_limit(service: Service, summary: RunSummary) -> None:
    before = service.cgroup()
    codes = run_spike(service)
    spike_end = time.time()
    assert codes == [201] * SPIKE_REQUESTS, {c: codes.count(c) for c in set(codes)}
    after_spike = service.process()
    release = wait_idle_release(service, since=spike_end - 1.0)
    readings = [service.cgroup() for _ in range(3)]  # three reads; the worst one counts
    idle = max(readings, key=lambda r: r.working_set)
    proc = service.process()
    state = service.state()

    summary.append(
        f"{service.profile.name:<20} cgroup usage: start {before.usage / MB:.0f} MB, "
        f"peak {(idle.peak or 0) / MB:.0f} MB, idle {idle.usage / MB:.0f} MB "
        f"(working set {idle.working_set / MB:.0f} MB) of {LIMIT_BYTES / MB:.0f} MB; "
        f"RSS peak {proc.peak_rss / MB:.0f} MB -> after spike {after_spike.rss / MB:.0f} MB "
        f"-> idle {proc.rss / MB:.0f} MB; idle release freed "
        f"{float(release.get('freed_bytes') or 0) / MB:.1f} MB"
    )
    assert state["Running"] and not state["OOMKilled"], state
    assert idle.oom_kills in (0, None), f"{idle.oom_kills} OOM kills in the container"
    assert idle.usage < LIMIT_BYTES
    assert idle.working_set < IDLE_MAX_SHARE_OF_LIMIT * LIMIT_BYTES, idle
    assert proc.rss < IDLE_MAX_SHARE_OF_PEAK_RSS * proc.peak_rss, proc
    assert httpx.get(service.url("/healthz"), timeout=5).status_code == 200


def test_sigterm_stops_cleanly(service: Service) -> None:
    """`docker stop` sends SIGTERM, then SIGKILL after STOP_SECONDS: exit code 0 (not 137)
    means uvicorn shut down on SIGTERM alone, within that time."""
    service.engine.run("stop", "--time", str(STOP_SECONDS), service.name, timeout=60)
    state = service.state()
    assert not state["Running"]
    assert state["ExitCode"] == 0, state
    assert not state["OOMKilled"]
    logs = service.logs()
    for line in ("Shutting down", "Application shutdown complete", "Finished server process"):
        assert line in logs, logs[-2000:]


def test_image_holds_no_env_file_or_build_secret(image: Image) -> None:
    done = image.engine.run(
        "run", "--rm", "--user", "0", "--entrypoint", "find", image.tag,
        "/", "-xdev", "(", "-name", ".env", "-o", "-name", ".env.*", "-o", "-path",
        "/run/secrets*", ")", "-print",
        timeout=120,
    )
    assert done.stdout.strip() == ""
    listing = image.engine.run("run", "--rm", "--entrypoint", "ls", image.tag, "-A", "/app").stdout
    assert sorted(listing.split()) == ["app", "profiles"]


def test_image_config_holds_no_secrets(image: Image) -> None:
    raw = image.engine.run("image", "inspect", "--format", "{{json .Config}}", image.tag).stdout
    config = json.loads(raw)
    names = [entry.split("=", 1)[0] for entry in config["Env"]]
    assert not [n for n in names if SECRET_NAME.search(n)], names
    assert not [e for e in config["Env"] if "-----BEGIN" in e]
    history = image.engine.run("history", "--no-trunc", "--format", "{{.CreatedBy}}",
                               image.tag).stdout
    assert "-----BEGIN" not in history
    assert config["User"] not in ("", "0", "root", "0:0")
