"""The service started on this machine exactly as the container starts it: `python -m app.launch`.

Loopback only, a free port, a fresh database in a temporary folder, a random admin token, and
the profile picked by MEMORY_PROFILE; optionally inside a real memory cgroup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil

from app.profiles import load_profiles
from scripts.verify.core.cgroup_limit import MemoryCgroup, with_cgroup
from scripts.verify.core.kernel_peak import KernelPeak, PeakMarks
from scripts.verify.core.sampling import ExitCensus, Sample, tree_processes, tree_sample
from scripts.verify.core.served import Served, free_port, http_get

__all__ = ["REPO_ROOT", "LocalServer", "clean_environment", "free_port", "http_get"]

REPO_ROOT = Path(__file__).resolve().parents[3]
# Variables that would change what is being measured if inherited from the caller's shell.
MEASURED_PREFIXES = ("MEMORY_", "MALLOC_", "CACHE_", "MAX_BULK", "MAX_BODY", "LIMIT_MAX")
MEASURED_NAMES = (
    "LD_PRELOAD",
    "GLIBC_TUNABLES",
    "PYTHONMALLOC",
    "WEB_CONCURRENCY",
    "THREADPOOL_SIZE",
)


def clean_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without anything a profile sets or that tunes memory, so every
    profile runs from the same start whatever the shell had exported (--set passes settings on
    purpose)."""
    profile_names = {k for p in load_profiles().profiles.values() for k in p.env}
    return {
        k: v
        for k, v in base.items()
        if k not in profile_names
        and k not in MEASURED_NAMES
        and not k.startswith(MEASURED_PREFIXES)
    }


class LocalServer(Served):
    """One server process tree; start(), wait_healthy(), probe() each second, stop()."""

    # The launcher execs the server, which stops its own workers; a shell between the verifier
    # and a user's server would not pass SIGTERM on, so those are signalled as a group.
    signal_group = False

    def __init__(
        self,
        profile: str,
        workdir: Path,
        log_path: Path,
        cleanup_interval_seconds: float,
        cache_ttl_seconds: float,
        limit_mb: float,
        cgroup: MemoryCgroup | None = None,
        web_concurrency: int = 1,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            profile, log_path, cleanup_interval_seconds, cache_ttl_seconds, limit_mb, overrides
        )
        self.workdir = workdir
        self.cgroup = cgroup
        self.web_concurrency = web_concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self.census = ExitCensus()  # workers the server replaces during the run
        self.marks: PeakMarks | None = None  # made at the first read, once the cgroup exists

    def environment(self) -> dict[str, str]:
        env = clean_environment(os.environ)
        env.update(
            MEMORY_PROFILE=self.profile,
            HOST="127.0.0.1",
            PORT=str(self.port),
            ADMIN_TOKEN=self.token,
            DATABASE_PATH=str(self.workdir / "service.db"),
            **self.preset_settings(),
            WEB_CONCURRENCY=str(self.web_concurrency),
            PYTHONUNBUFFERED="1",
            # Started from its work folder, as in the image (WORKDIR /app, no .env): a .env in
            # the checkout must not change what is measured; the code is found by PYTHONPATH.
            PYTHONPATH=str(REPO_ROOT),
        )
        if self.cgroup is None:
            # No kernel limit to detect: tell the service the limit it is judged against.
            env["MEMORY_LIMIT_MB"] = f"{self.limit_mb:g}"
        env.update(self.overrides)
        return env

    def command(self) -> list[str]:
        """The server's command line: the launcher. An instrument in lab/ names another module
        that calls ``app.launch.launch`` with its change to the server's command line."""
        return [sys.executable, "-m", "app.launch"]

    def start(self) -> LocalServer:
        """The one place a server the verifier owns is started: its own session (so stop() can
        reach every worker), its log, and the cgroup joined before exec."""
        log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=self.cgroup.join if self.cgroup else None,  # before samplers start
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def failure(self) -> str | None:
        """Why the server is gone, or None while it runs."""
        code = self.exit_code()
        if code is None:
            return None
        why = f"server exited with code {code}"
        if code < 0:
            why = f"server was killed by signal {-code}"
        if self.cgroup is not None and self.cgroup.events().oom_kills:
            why += f" (OOM-killed in the {self.limit_mb:g} MB cgroup)"
        return why

    def probe(self, t: float) -> list[Sample]:
        if self.process is None or self.exit_code() is not None:
            return []
        try:
            sample = tree_sample(self.process.pid, t, self.census)
        except psutil.NoSuchProcess:
            return []
        return [with_cgroup(sample, self.cgroup)]

    def pids(self) -> list[int]:
        """The server's processes now: the root and every descendant."""
        if self.process is None or self.exit_code() is not None:
            return []
        try:
            return [p.pid for p in tree_processes(self.process.pid)]
        except psutil.NoSuchProcess:
            return []

    def take_peak(self) -> KernelPeak:
        """The kernel's marks since the last call (kernel_peak.py), reset for the next phase."""
        if self.marks is None:
            cgroup = self.cgroup.peak_file() if self.cgroup is not None else None
            self.marks = PeakMarks(self.pids, cgroup)
        return self.marks.take()

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (to the whole group with ``signal_group``), then SIGKILL to the whole group
        after ``grace`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.signal_group:
            os.killpg(self.process.pid, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
