"""The service image under `docker run --memory`: the limit Railway's containers live under.

The engine, the base image and the image build come from docker_engine.py. Where this host runs the
container's processes (Linux, cgroup v1 or v2), they are sampled from the host (root can read their
/proc) and its memory cgroup is read where the engine made it. Where it does not (Docker Desktop's
VM, a remote engine), the cgroup is read through the engine (engine_cgroup.py) and there are no
per-process figures.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psutil

from scripts.verify.core import docker_engine
from scripts.verify.core.cgroup_limit import CgroupSource, HostCgroup, ReadOnlyPeak, with_cgroup
from scripts.verify.core.docker_engine import IMAGE_TAG, Engine
from scripts.verify.core.engine_cgroup import EngineCgroup
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.kernel_peak import KernelPeak, PeakCgroup, PeakMarks
from scripts.verify.core.sampling import ExitCensus, Sample, tree_processes, tree_sample
from scripts.verify.core.served import Served

CONTAINER_PORT = 8000


def host_cgroup_of(pid: int, container_id: str, proc: Path = Path("/proc")) -> HostCgroup | None:
    """The container's cgroup as this host sees it: its PID 1's, if that cgroup's path names the
    container (on Docker Desktop the pid is the VM's, and a host process by that number is not
    the container's)."""
    found = HostCgroup.of_pid(pid, proc=proc)
    if found is None or not container_id or container_id[:12] not in str(found.path):
        return None
    return found


class ContainerService(Served):
    """One container of the service image; the same interface as LocalServer."""

    kind = "container"

    def __init__(
        self,
        engine: Engine,
        image: str,
        profile: str,
        log_path: Path,
        cleanup_interval_seconds: float,
        cache_ttl_seconds: float,
        limit_mb: float,
        overrides: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            profile, log_path, cleanup_interval_seconds, cache_ttl_seconds, limit_mb, overrides
        )
        self.engine = engine
        self.image = image
        self.name = f"lean-memory-verify-{uuid.uuid4().hex[:10]}"
        self.container_id = ""
        self.host_pid: int | None = None  # None where the host does not run its processes
        self.census = ExitCensus()  # workers the server replaces during the run
        self.cgroup: CgroupSource | None = None
        self.cgroup_where = "none"
        self.marks: PeakMarks | None = None  # made once the container runs

    def settings(self) -> dict[str, str]:
        """The container's environment: the profile, the status token, the preset's settings."""
        return {
            "MEMORY_PROFILE": self.profile,
            "ADMIN_TOKEN": self.token,
            **self.preset_settings(),
            **self.overrides,
        }

    def run_argv(self) -> list[str]:
        limit = f"{int(self.limit_mb)}m"
        settings = self.settings()
        argv = ["run", "-d", "--name", self.name, f"--memory={limit}", f"--memory-swap={limit}"]
        argv += ["-p", f"127.0.0.1:{self.port}:{CONTAINER_PORT}"]
        for key, value in settings.items():
            argv += ["-e", f"{key}={value}"]
        return [*argv, self.image]

    def start(self) -> ContainerService:
        done = self.engine.run(*self.run_argv(), check=False, timeout=120)
        if done.returncode != 0:
            raise RunNotMade(f"docker run failed: {done.stderr.strip()}")
        self.container_id = done.stdout.strip()
        pid = int(self.state().get("Pid") or 0)
        if not pid:
            raise RunNotMade(f"container {self.name} is not running: {self.log_tail()}")
        host = host_cgroup_of(pid, self.container_id)
        if host is not None:
            self.host_pid, self.cgroup, self.cgroup_where = pid, host, "host"
        else:
            self.cgroup, self.cgroup_where = EngineCgroup(self.engine, self.name), "engine"
        return self

    def state(self) -> dict[str, Any]:
        done = self.engine.run("inspect", "--format", "{{json .State}}", self.name, check=False)
        if done.returncode != 0:
            return {}
        document: dict[str, Any] = json.loads(done.stdout)
        return document

    def log_tail(self, lines: int = 3) -> str:
        done = self.engine.run("logs", "--tail", str(lines), self.name, check=False)
        return " | ".join((done.stdout + done.stderr).strip().splitlines()[-lines:])

    def failure(self) -> str | None:
        """None while PID 1 of the container runs; else how it ended (OOM kill included)."""
        if self.host_pid is not None:
            try:
                if psutil.Process(self.host_pid).status() != psutil.STATUS_ZOMBIE:
                    return None
            except psutil.NoSuchProcess:
                pass
        state = self.state()
        if state.get("Running"):
            return None
        why = f"container exited with code {state.get('ExitCode')}"
        if state.get("OOMKilled"):
            why += f" (OOM-killed under --memory={int(self.limit_mb)}m)"
        return why

    def pids(self) -> list[int]:
        """The container's processes as this host numbers them; none where it cannot see them."""
        if self.host_pid is None:
            return []
        try:
            return [p.pid for p in tree_processes(self.host_pid)]
        except psutil.NoSuchProcess:
            return []

    def take_peak(self) -> KernelPeak:
        """The kernel's marks since the last call, reset for the next phase where this host can
        write them; through the engine only the cgroup's, over the container's whole life."""
        if self.marks is None:
            cgroup = self.cgroup
            peak: PeakCgroup | None = None
            if isinstance(cgroup, HostCgroup):
                peak = cgroup.peak_file()
            elif cgroup is not None:
                peak = ReadOnlyPeak(cgroup)
            self.marks = PeakMarks(self.pids, peak)
        return self.marks.take()

    def probe(self, t: float) -> list[Sample]:
        sample = Sample(t=t)
        if self.host_pid is not None:
            try:
                sample = tree_sample(self.host_pid, t, self.census)
            except psutil.NoSuchProcess:
                return []
        return [with_cgroup(sample, self.cgroup)]

    def stop(self) -> None:
        """Keep the container's log, then remove it."""
        logs = self.engine.run("logs", self.name, check=False, timeout=60)
        self.log_path.write_text(logs.stdout + logs.stderr)
        self.engine.run("stop", "--time", "15", self.name, check=False, timeout=60)
        self.engine.run("rm", "-f", self.name, check=False, timeout=60)
        if isinstance(self.cgroup, EngineCgroup):
            self.cgroup.close()


def engine_only() -> Engine:
    """A Docker engine, for an image someone else built (``--image``); the caller stops it."""
    try:
        return docker_engine.ensure_engine()
    except docker_engine.EngineUnavailable as exc:
        raise RunNotMade(f"--image: {exc}") from None


def prepare_engine(log_path: Path) -> Engine:
    """A Docker engine with the service image built from this checkout. The caller calls
    ``engine.stop()``: it stops a private engine only when no other run still uses it, and never
    one that was already running."""
    try:
        engine = docker_engine.ensure_engine()
    except docker_engine.EngineUnavailable as exc:
        raise RunNotMade(f"--limit-mode docker: {exc}") from None
    try:
        # Built every time, so the container runs this checkout's code, never an older image;
        # with nothing changed, every layer comes from the build cache in seconds.
        docker_engine.ensure_base_image(engine)
        docker_engine.build_image(engine, IMAGE_TAG, log=log_path)
    except (docker_engine.EngineUnavailable, docker_engine.BuildFailed) as exc:
        engine.stop()
        raise RunNotMade(f"--limit-mode docker: image {IMAGE_TAG}: {exc}") from None
    return engine


def image_tag() -> str:
    return IMAGE_TAG
