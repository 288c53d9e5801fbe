"""The memory package and the service's integration tests under Debian unstable's CPython 3.14 or
3.15: `python -m lab.sid` (3.14) or `python -m lab.sid --python 3.15`.

No distribution this machine runs ships either, and no container registry can be reached, so the
interpreter comes the way the base image's stand-in does (scripts/verify/core/docker_engine.py):
debootstrap builds a minbase root of Debian's unstable suite, from the Debian mirror the host's apt
already uses, with `python3.X`, `python3.X-venv` and `libjemalloc2` inside. In that root a venv is
made from requirements-dev.lock with `--require-hashes`, and pytest runs the selection in TESTS on
the repository, bind-mounted at /src.

Everything is mounted inside a mount namespace of its own (`unshare --mount`): /proc, /dev, /sys
(the cgroup tests create real memory cgroups) and the repository vanish with the last process in
it, however the run ends, so no mount outlives a run and deleting the cached root can never reach
the host's /dev or the repository through a leftover bind.

Cached per version, under .cache/py314/ or .cache/py315/ (or $LMS_CACHE_DIR/py31X/): the root,
in a folder named for its suite and packages (made again with --refresh, or once it is a week old,
as the suite moves) and, in it, the venv (remade when requirements-dev.lock changes). A first run
on a fresh machine takes a few minutes, a second one only the tests.

  exit 0     the tests passed (pytest's own summary line is the last thing pytest prints)
  exit 1-5   pytest's own status (failures, interrupted, internal error, usage, none collected)
  exit 6     the root or the venv could not be made (the message says which step, and why)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.verify.core.docker_engine import CACHE_DIR, apt_mirrors, ca_bundle

REPO_ROOT = Path(__file__).resolve().parent.parent
SUITE = "sid"
PYTHONS = ("3.14", "3.15")  # the unstable suite's interpreters; CI runs each
VENV = "/opt/venv"
SRC = "/src"
CA_IN_ROOT = "/etc/ssl/certs/host-ca-bundle.crt"
READY = ".lms-ready"  # written last: a root without it is an interrupted build
SETUP_FAILED = 6
DEBOOTSTRAP_SECONDS = 900
PIP_SECONDS = 900
TESTS_SECONDS = 900
# The unstable suite moves; a root older than this is made again so CI follows its interpreters.
MAX_AGE_SECONDS = 7 * 24 * 3600

# What runs under 3.14 and 3.15 (and 3.12, lab/py312.py), chosen here and nowhere else: the memory
# package's tests (the lift-out into another service under every server among them), and the
# service's integration tests of the launcher, the default profile, release and admission. The
# rest of the suite needs a Docker engine, measures, or tests tools that run beside the service
# rather than in it.
TESTS: tuple[str, ...] = (
    "tests/memory",  # the package, admission's accounting, the lift-out (test_liftout.py)
    "tests/app/test_launch.py",  # the launcher: profile choice, argv, bad config, jemalloc stops
    "tests/integration/test_server.py",  # default profile served for real; release after a spike
    "tests/integration/test_memory.py",  # glibc trim and jemalloc purge give memory back
    "tests/integration/test_overload.py",  # admission sheds load in a real 500 MB cgroup
)
# Left out of TESTS under every interpreter: what tests the servers rather than the package, and
# costs minutes a run (`make test` runs it once).
IGNORED: tuple[str, ...] = (
    "tests/memory/test_liftout_attacks.py",  # slowhttptest against the lifted service per server
)


class SetupFailed(RuntimeError):
    """The root or its venv could not be made; the message names the step."""


@dataclass(frozen=True)
class Python:
    """One of the unstable suite's interpreters, and everything named after it: its packages,
    its binary, and its cache folder (py314, py315), so the versions never share a root."""

    minor: str  # "3.15"

    @property
    def tag(self) -> str:
        return "py" + self.minor.replace(".", "")

    @property
    def packages(self) -> tuple[str, ...]:
        return (f"python{self.minor}", f"python{self.minor}-venv", "libjemalloc2")

    @property
    def interpreter(self) -> str:
        return f"/usr/bin/python{self.minor}"

    def cache(self, base: Path = CACHE_DIR) -> Path:
        return base / self.tag

    def say(self, line: str) -> None:
        sys.stdout.write(f"{self.tag}: {line}\n")
        sys.stdout.flush()


def lock_digest(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def root_name(suite: str, packages: Sequence[str]) -> str:
    """The root's folder, named for what it is made from: another suite or package list is
    another root, never a stale one reused."""
    key = hashlib.sha256(" ".join((suite, *sorted(packages))).encode()).hexdigest()[:12]
    return f"rootfs-{suite}-{key}"


def debootstrap_command(
    root: Path, mirror: str, packages: Sequence[str], debootstrap: str = "debootstrap"
) -> list[str]:
    """debootstrap of the unstable suite, minbase, with the interpreter and jemalloc included."""
    return [
        debootstrap,
        "--variant=minbase",
        f"--include={','.join(packages)}",
        SUITE,
        str(root),
        mirror,
    ]


def mount_commands(root: Path, repo: Path) -> list[list[str]]:
    """The mounts the tests need, meant to run inside `unshare --mount`: a proc of this pid
    namespace (psutil, /proc/self/maps), the host's /dev and /sys recursively (the cgroup v1
    memory controller lives under /sys/fs/cgroup), and the repository at /src."""
    return [
        ["mount", "-t", "proc", "proc", str(root / "proc")],
        ["mount", "--rbind", "/dev", str(root / "dev")],
        ["mount", "--rbind", "/sys", str(root / "sys")],
        ["mount", "--bind", str(repo), str(root / SRC.lstrip("/"))],
    ]


def chroot_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A clean environment for the root: the host's own PATH and venv mean nothing in it. CI and
    a package index override pass through; pip trusts the host's CA bundle (the network here
    re-signs TLS, and a fresh root does not trust it)."""
    env = {
        "PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CERT": CA_IN_ROOT,
        "SSL_CERT_FILE": CA_IN_ROOT,
    }
    for name in ("CI", "PIP_INDEX_URL", "PIP_DEFAULT_TIMEOUT", "DEBIAN_MIRROR"):
        if environ.get(name):
            env[name] = environ[name]
    return env


def in_root(
    root: Path, repo: Path, argv: Sequence[str], env: Mapping[str, str], cwd: str = SRC
) -> list[str]:
    """One command: a private mount namespace, the mounts, then `argv` chrooted in `cwd`."""
    inner = f"{shlex.join(['cd', cwd])} && exec {shlex.join(argv)}"
    chroot = [
        "chroot",
        str(root),
        "/usr/bin/env",
        "-i",
        *(f"{k}={v}" for k, v in sorted(env.items())),
        "/bin/sh",
        "-c",
        inner,
    ]
    script = " && ".join(shlex.join(cmd) for cmd in mount_commands(root, repo))
    script += " && exec " + shlex.join(chroot)
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script]


def pytest_argv(tests: Sequence[str] = TESTS, extra: Sequence[str] = ()) -> list[str]:
    """pytest in the root's venv on the selection; `-p no:cacheprovider` keeps the run's cache out
    of the host's checkout (only servers the tests start may leave cpython-31X .pyc files, which
    git ignores)."""
    ignored = [f"--ignore={path}" for path in IGNORED]
    python = f"{VENV}/bin/python"
    return [python, "-m", "pytest", "-p", "no:cacheprovider", *ignored, *extra, *tests]


def wheel_tags(report: Mapping[str, Any]) -> dict[str, list[str]]:
    """What pip installed, by how it came (from `pip install --report`): wheels by ABI tag
    (`cp314`, `abi3`, `none` for pure Python) and `sdist` for a package built from source here."""
    found: dict[str, list[str]] = {}
    for item in report.get("install", []):
        name = item["metadata"]["name"]
        filename = item["download_info"]["url"].rsplit("/", 1)[-1]
        wheel = filename.endswith(".whl")
        kind = filename.removesuffix(".whl").split("-")[-2] if wheel else "sdist"
        found.setdefault(kind, []).append(name)
    return found


def build_root(root: Path, packages: Sequence[str], log: Path) -> None:
    """debootstrap into a temporary folder beside `root`, in a mount namespace of its own (it
    mounts /proc and /sys in the target, and a failed run could leave them mounted), then rename
    it into place, so `root` is either complete or absent."""
    if os.geteuid() != 0:
        raise SetupFailed("debootstrap needs root")
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.access(debootstrap, os.X_OK):
        raise SetupFailed("debootstrap is not installed (Debian: apt-get install debootstrap)")
    mirror = apt_mirrors().get("debian")
    if mirror is None:
        raise SetupFailed("no Debian mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR to one")
    root.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=root.parent, prefix="building-"))
    try:
        with open(log, "ab") as out:
            done = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "--",
                 *debootstrap_command(building / "rootfs", mirror, packages, debootstrap)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=DEBOOTSTRAP_SECONDS,
                check=False,
            )  # fmt: skip
        if done.returncode != 0:
            raise SetupFailed(f"debootstrap {SUITE} exited {done.returncode}; see {log}")
        (building / "rootfs" / SRC.lstrip("/")).mkdir(exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        (building / "rootfs").rename(root)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def versions(root: Path, packages: Sequence[str]) -> str:
    """The packages that matter, as dpkg recorded them in the root."""
    done = subprocess.run(
        ["chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${Version}, ", *packages,
         "libc6"],
        capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return done.stdout.strip().rstrip(",") or "(unknown)"


def stale(ready: Path, now: float) -> bool:
    """Whether the root is missing, unfinished, or older than MAX_AGE_SECONDS."""
    try:
        return now - ready.stat().st_mtime > MAX_AGE_SECONDS
    except OSError:
        return True


def prepare_root(python: Python, root: Path, refresh: bool, log: Path) -> None:
    ready = root / READY
    if refresh or stale(ready, time.time()):
        started = time.monotonic()
        python.say(f"debootstrap {SUITE} (minbase, {', '.join(python.packages)}) into {root}")
        build_root(root, python.packages, log)
        ready.write_text(versions(root, python.packages) + "\n")
        python.say(f"root made in {time.monotonic() - started:.0f} s")
    # Per run, not cached: the host's name servers and CA bundle may change between runs.
    copy_in(Path("/etc/resolv.conf"), root / "etc/resolv.conf")
    bundle = ca_bundle()
    if bundle is not None:
        copy_in(bundle, root / CA_IN_ROOT.lstrip("/"))


def copy_in(source: Path, target: Path) -> None:
    """Copy a host file into the root. The target is unlinked first: a symlink there points into
    the host's own tree (outside the chroot), and writing through it would change the host."""
    target.unlink(missing_ok=True)
    shutil.copyfile(source, target)


def prepare_venv(python: Python, root: Path, repo: Path, env: Mapping[str, str], log: Path) -> None:
    """The venv from requirements-dev.lock, with hashes, remade only when the lock changes."""
    stamp = root / VENV.lstrip("/") / ".lock-sha256"
    digest = lock_digest(repo / "requirements-dev.lock")
    if stamp.exists() and stamp.read_text().strip() == digest:
        return
    started = time.monotonic()
    shutil.rmtree(root / VENV.lstrip("/"), ignore_errors=True)
    report = f"{VENV}/pip-report.json"
    script = (
        f"{python.interpreter} -m venv {VENV} && {VENV}/bin/python -m pip install -q "
        f"--require-hashes -r {SRC}/requirements-dev.lock --report {report}"
    )
    with open(log, "ab") as out:
        done = subprocess.run(
            in_root(root, repo, ["/bin/sh", "-c", script], env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=PIP_SECONDS,
            check=False,
        )
    if done.returncode != 0:
        raise SetupFailed(f"pip install -r the dev lock exited {done.returncode}; see {log}")
    tags = wheel_tags(json.loads((root / report.lstrip("/")).read_text()))
    counts = ", ".join(f"{len(names)} {kind}" for kind, names in sorted(tags.items()))
    elapsed = time.monotonic() - started
    python.say(f"venv from requirements-dev.lock in {elapsed:.0f} s: wheels {counts}")
    if tags.get("sdist"):
        built = ", ".join(sorted(tags["sdist"]))
        python.say(f"no {python.minor} wheel, built from source: {built}")
    stamp.write_text(digest + "\n")


def run_tests(argv: Sequence[str], timeout: float = TESTS_SECONDS) -> int:
    """pytest's exit status. It runs in a session of its own, so that on a timeout or an
    interrupt pytest and the servers it started are stopped together."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_and_report(
    argv: Sequence[str], report: Callable[[str], None], timeout: float = TESTS_SECONDS
) -> int:
    """pytest's exit status, with one line for how it ended; 1 when it did not end in time."""
    started = time.monotonic()
    try:
        status = run_tests(argv, timeout)
    except subprocess.TimeoutExpired:
        report(f"tests did not finish within {timeout:g} s; stopped")
        return 1
    report(f"pytest exited {status} after {time.monotonic() - started:.0f} s")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n\n", 1)[0].replace("\n", " ")
    parser = argparse.ArgumentParser(prog="python -m lab.sid", description=summary)
    parser.add_argument("--python", choices=PYTHONS, default=PYTHONS[0], help="the interpreter")
    parser.add_argument("--refresh", action="store_true", help="debootstrap the root again")
    parser.add_argument("--cache", type=Path, help="where the root is kept (default: per version)")
    # Anything else (-x, -k NAME, --durations=10) goes to pytest, before the selection.
    args, pytest_args = parser.parse_known_args(argv)
    python = Python(args.python)
    cache: Path = args.cache or python.cache()
    root = cache / root_name(SUITE, python.packages)
    log = cache / "setup.log"
    env = chroot_env(os.environ)
    say = python.say
    if os.geteuid() != 0:
        say("setup failed: needs root (debootstrap, mounts and chroot)")
        return SETUP_FAILED
    try:
        cache.mkdir(parents=True, exist_ok=True)
        prepare_root(python, root, args.refresh, log)
        prepare_venv(python, root, REPO_ROOT, env, log)
    except (SetupFailed, OSError, subprocess.SubprocessError) as exc:
        say(f"setup failed: {exc}")
        return SETUP_FAILED
    say(f"{(root / READY).read_text().strip()}; pytest on {' '.join(TESTS)}")
    return run_and_report(in_root(root, REPO_ROOT, pytest_argv(TESTS, pytest_args), env), say)


if __name__ == "__main__":
    sys.exit(main())
