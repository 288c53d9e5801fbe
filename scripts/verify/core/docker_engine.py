"""A Docker engine, the base image and the service image, for the container tests and local builds.

Uses the engine that already answers `docker info`. Otherwise, as root, it starts a private
`dockerd` with its own data root, exec root, socket and pidfile, and stops it by that pid
afterwards, so nothing is left running. Where no registry can be reached, a missing
`debian:<suite>-slim` base is built from Debian's own packages with debootstrap (a local stand-in,
said plainly) and cached as a tarball under `.cache/` (or $LMS_CACHE_DIR), so the unchanged
Dockerfile builds.

    python -m scripts.verify.core.docker_engine build         # engine, base, image; engine stopped
    python -m scripts.verify.core.docker_engine build --keep  # the private engine left running
    python -m scripts.verify.core.docker_engine stop          # stop the engine left running
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_VARIABLE = "LMS_CACHE_DIR"


def cache_root(environ: Mapping[str, str] = os.environ, repo: Path = REPO_ROOT) -> Path:
    """Where the engine's state, the base tarball and the interpreter roots are kept:
    $LMS_CACHE_DIR, else .cache/ in the checkout. .ci/run points it outside the clone, so a fresh
    clone on the same machine reuses what an earlier run built; each entry is keyed by what it
    is made from (Docker's build cache by its inputs, a root by its suite and packages, a venv by
    the lock), so a reused entry is one the same inputs would make again."""
    named = environ.get(CACHE_VARIABLE, "").strip()
    return Path(named) if named else repo / ".cache"


CACHE_DIR = cache_root()
DOCKERFILE = REPO_ROOT / "Dockerfile"
IMAGE_TAG = "lean-memory-service:test"
# A label on the stand-in base; it is inherited by every image built on it, so an image can tell.
STAND_IN_LABEL = "lean-memory-service.base"
STAND_IN_VALUE = "debootstrap-stand-in"
STAND_IN_NOTICE = "base image {image} is a local stand-in built with debootstrap"
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
APT_SOURCES = Path("/etc/apt")
# Debian's client speaks BuildKit without buildx; an older client elsewhere on PATH may not.
CLIENTS = ("/usr/bin/docker",)
ENGINE_START_SECONDS = 60.0
ENGINE_STOP_SECONDS = 30.0
PULL_SECONDS = 60.0
BUILD_SECONDS = 1200.0


class EngineUnavailable(RuntimeError):
    """No Docker engine can be had here (not a failure of the project); the message says why."""


class BuildFailed(RuntimeError):
    """The engine works but the image did not build; the message holds the end of the build log."""


@dataclass
class Engine:
    """A Docker engine to talk to: the client, the variables that point it at the engine, and,
    for a private engine started here, the dockerd pid that must be stopped afterwards."""

    client: str
    env: dict[str, str]
    buildkit: bool = False
    pid: int | None = None
    state_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    users_lock: int | None = None  # fd holding a shared flock while this process uses the engine

    def run(
        self,
        *args: str,
        timeout: float = 120.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker <args>` against this engine and capture its output as text."""
        result = subprocess.run(
            [self.client, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        done = subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"),
        )
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(
                done.returncode, done.args, done.stdout, done.stderr
            )
        return done

    @property
    def private(self) -> bool:
        return self.pid is not None

    def stop(self) -> None:
        """Stop the private dockerd (and its containerd) unless another process still uses it;
        the last user stops it. No-op for an engine that was running before."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        fd, self.users_lock = self.users_lock, None
        if fd is None:
            stop_dockerd(pid, self.state_dir)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.notes.append(f"private dockerd {pid} left running: another process uses it")
                return
            stop_dockerd(pid, self.state_dir)
        finally:
            os.close(fd)


def docker_client() -> str | None:
    for path in CLIENTS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("docker")


def _answers(client: str, env: Mapping[str, str], timeout: float = 15.0) -> bool:
    try:
        result = subprocess.run(
            [client, "info", "--format", "{{.ServerVersion}}"],
            env={**os.environ, **env},
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def state_paths(state_dir: Path | None = None) -> dict[str, Path]:
    """Where a private engine keeps things: images persist under .cache/ so a second run reuses
    them; the exec root and socket live under the temp dir, as unix socket paths must stay short."""
    data = state_dir or CACHE_DIR / "docker"
    tag = hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:10]
    run = Path(tempfile.gettempdir()) / f"lms-docker-{tag}"
    return {
        "data": data,
        "data_root": data / "data",
        "log": data / "dockerd.log",
        "run": run,
        "exec_root": run / "exec",
        "socket": run / "docker.sock",
        "pidfile": run / "dockerd.pid",
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmd_is(pid: int, program: bytes) -> bool:
    """Whether `pid` runs `program` (guards against a recycled pid in a stale pidfile)."""
    try:
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return exe.rsplit(b"/", 1)[-1] == program


def start_dockerd(state_dir: Path | None = None) -> tuple[int, dict[str, str]]:
    """Start (or adopt, after a crashed run) a private dockerd; returns its pid and client env."""
    paths = state_paths(state_dir)
    env = {"DOCKER_HOST": f"unix://{paths['socket']}"}
    client = docker_client()
    assert client is not None
    old = _read_pid(paths["pidfile"])
    if old is not None and _pid_alive(old) and _cmd_is(old, b"dockerd"):  # adopt a running one
        if _wait_answers(client, env, old, ENGINE_START_SECONDS):
            return old, env
        stop_dockerd(old, state_dir)
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    for key in ("data_root", "exec_root"):
        paths[key].mkdir(parents=True, exist_ok=True)
    paths["pidfile"].unlink(missing_ok=True)
    paths["socket"].unlink(missing_ok=True)
    with open(paths["log"], "ab") as log:
        proc = subprocess.Popen(
            [
                dockerd,
                "--data-root",
                str(paths["data_root"]),
                "--exec-root",
                str(paths["exec_root"]),
                "-H",
                env["DOCKER_HOST"],
                "--pidfile",
                str(paths["pidfile"]),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C in a terminal must not kill it before cleanup
        )
    if not _wait_answers(client, env, proc.pid, ENGINE_START_SECONDS):
        stop_dockerd(proc.pid, state_dir)
        raise EngineUnavailable(
            f"dockerd did not answer within {ENGINE_START_SECONDS:g} s; "
            f"end of {paths['log']}:\n{_tail(paths['log'])}"
        )
    return proc.pid, env


def _wait_answers(client: str, env: Mapping[str, str], pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return False
        if _answers(client, env, timeout=5.0):
            return True
        time.sleep(0.5)
    return False


def stop_dockerd(pid: int, state_dir: Path | None = None) -> None:
    """SIGTERM the dockerd by its pid and wait: it stops its containers and the containerd it
    started, which is waited for too (by the pid in its own pidfile) so nothing is left running."""
    paths = state_paths(state_dir)
    containerd = _read_pid(paths["exec_root"] / "containerd" / "containerd.pid")
    if _pid_alive(pid) and _cmd_is(pid, b"dockerd"):
        _terminate(pid)
    if containerd is not None and _pid_alive(containerd) and _cmd_is(containerd, b"containerd"):
        deadline = time.monotonic() + 10.0
        while _pid_alive(containerd) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(containerd):
            _terminate(containerd)
    if _read_pid(paths["pidfile"]) in (pid, None):
        paths["pidfile"].unlink(missing_ok=True)


def _terminate(pid: int) -> None:
    """SIGTERM, wait up to ENGINE_STOP_SECONDS, then SIGKILL."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + ENGINE_STOP_SECONDS
    while _pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def buildkit_works(engine: Engine) -> bool:
    """Whether `DOCKER_BUILDKIT=1 docker build` works here (a scratch build, no base needed)."""
    probe = "lean-memory-service-buildkit-probe:latest"
    try:
        result = subprocess.run(
            [engine.client, "build", "-q", "-t", probe, "-"],
            env={**os.environ, **engine.env, "DOCKER_BUILDKIT": "1"},
            input=b"FROM scratch\nLABEL probe=buildkit\n",
            capture_output=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    engine.run("image", "rm", "-f", probe, check=False)
    return result.returncode == 0


def _lock(path: Path, mode: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, mode)
    return fd


def _start_shared(state_dir: Path | None) -> tuple[int, dict[str, str], int]:
    """Start or adopt the private engine as one of its users: a shared flock, released when this
    process exits however it exits, lets two test or verifier runs share one dockerd, and only the
    last one stops it. Starting is serialised; a stop in progress (exclusive lock) is waited for."""
    paths = state_paths(state_dir)
    starting = _lock(paths["run"] / "start.lock", fcntl.LOCK_EX)
    try:
        users = _lock(paths["run"] / "users.lock", fcntl.LOCK_SH)
        try:
            pid, env = start_dockerd(state_dir)
        except BaseException:
            os.close(users)
            raise
        return pid, env, users
    finally:
        os.close(starting)


def ensure_engine(state_dir: Path | None = None) -> Engine:
    """A Docker engine that answers: the one already running, else a private dockerd (root only).

    Raises EngineUnavailable, with the reason, when neither can be had.
    """
    client = docker_client()
    if client is None:
        raise EngineUnavailable("no docker client installed (Debian: apt-get install docker.io)")
    if _answers(client, {}):
        engine = Engine(client=client, env={})
    else:
        if os.geteuid() != 0:
            raise EngineUnavailable(
                f"no Docker engine answers `docker info` and starting one needs root "
                f"(running as uid {os.geteuid()})"
            )
        if not (shutil.which("dockerd") or os.access("/usr/sbin/dockerd", os.X_OK)):
            raise EngineUnavailable(
                "no Docker engine answers `docker info` and dockerd is not installed "
                "(Debian: apt-get install docker.io)"
            )
        pid, env, users_lock = _start_shared(state_dir)
        engine = Engine(client=client, env=env, pid=pid, state_dir=state_dir, users_lock=users_lock)
    engine.buildkit = buildkit_works(engine)
    if engine.buildkit:
        engine.env["DOCKER_BUILDKIT"] = "1"
    return engine


# --- base image ---------------------------------------------------------------------------------


def base_image(dockerfile: Path = DOCKERFILE) -> str:
    """The image the Dockerfile's first stage starts FROM."""
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", line, re.IGNORECASE)
        if match:
            return match.group(1)
    raise ValueError(f"{dockerfile}: no FROM line")


def debian_suite(image: str) -> str | None:
    """`debian:trixie-slim` -> `trixie`; None for anything debootstrap cannot stand in for."""
    match = re.fullmatch(r"(?:library/)?debian:([a-z]+)(?:-slim)?", image)
    return match.group(1) if match else None


def apt_mirrors(root: Path = APT_SOURCES) -> dict[str, str]:
    """The Debian archive and security URIs the host's apt uses ({"debian": .., "security": ..}),
    read from sources.list and sources.list.d (one-line and deb822 formats)."""
    files = [root / "sources.list"]
    folder = root / "sources.list.d"
    if folder.is_dir():
        files += sorted(p for p in folder.iterdir() if p.suffix in (".list", ".sources"))
    uris: list[str] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("URIs:"):
                uris += line.split()[1:]
            elif re.match(r"deb\s", line):
                parts = [p for p in line.split()[1:] if not p.startswith("[")]
                uris += parts[:1]
    found: dict[str, str] = {}
    for uri in uris:
        uri = uri.rstrip("/")
        if not uri.startswith(("http://", "https://")):
            continue
        if uri.endswith("/debian-security"):
            found.setdefault("security", uri)
        elif uri.endswith("/debian"):
            found.setdefault("debian", uri)
    override = os.environ.get("DEBIAN_MIRROR")
    if override:
        found["debian"] = override.rstrip("/")
    return found


def _deb822_sources(suite: str, mirrors: Mapping[str, str]) -> str:
    """The apt sources of Debian's own slim images, pointed at the host's mirror."""
    text = (
        f"Types: deb\nURIs: {mirrors['debian']}\nSuites: {suite} {suite}-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    if "security" in mirrors:
        text += (
            f"\nTypes: deb\nURIs: {mirrors['security']}\nSuites: {suite}-security\n"
            "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    return text


# What Debian's slim images leave out, and their apt settings (docker-debian-artifacts).
SLIM_DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
_APT_CLEAN = (
    '"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
    '/var/cache/apt/*.bin || true";'
)
APT_DOCKER_CLEAN = (
    f"DPkg::Post-Invoke {{ {_APT_CLEAN} }};\n"
    f"APT::Update::Post-Invoke {{ {_APT_CLEAN} }};\n"
    'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
)


def trim_like_slim(rootfs: Path) -> None:
    """Drop what the slim image drops (docs but copyright, man pages, locales) and apt's lists."""
    for folder in (
        "usr/share/groff",
        "usr/share/info",
        "usr/share/linda",
        "usr/share/lintian",
        "usr/share/locale",
        "usr/share/man",
    ):
        for item in (rootfs / folder).glob("*"):
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()
    for item in (rootfs / "usr/share/doc").rglob("*"):
        if (item.is_file() or item.is_symlink()) and item.name != "copyright":
            item.unlink()
    for folder in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
        for item in (rootfs / folder).glob("*"):
            if item.is_file():
                item.unlink()


def stand_in_tarball(suite: str) -> Path:
    arch = (
        subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
        ).stdout.strip()
        or "amd64"
    )
    return CACHE_DIR / "base" / f"debian-{suite}-slim-{arch}.tar"


def build_stand_in_rootfs(suite: str, tarball: Path, log: Path) -> None:
    """debootstrap a minbase `suite` from the host's Debian mirror, made to look like the slim
    image (its apt sources, no docs), and save it as a tarball."""
    if os.geteuid() != 0:
        raise EngineUnavailable("building the base stand-in with debootstrap needs root")
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.access(debootstrap, os.X_OK):
        raise EngineUnavailable(
            "the base image is missing and debootstrap is not installed to build a stand-in "
            "(Debian: apt-get install debootstrap)"
        )
    mirrors = apt_mirrors()
    if "debian" not in mirrors:
        raise EngineUnavailable(
            "no Debian mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR to one"
        )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        with open(log, "ab") as out:
            done = subprocess.run(
                [debootstrap, "--variant=minbase", suite, str(rootfs), mirrors["debian"]],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=900,
                check=False,
            )
        if done.returncode != 0:
            raise EngineUnavailable(f"debootstrap {suite} failed; end of {log}:\n{_tail(log)}")
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
            _deb822_sources(suite, mirrors)
        )
        (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_DPKG_EXCLUDES)
        (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(APT_DOCKER_CLEAN)
        trim_like_slim(rootfs)
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
            check=True,
        )
        partial.replace(tarball)


def import_stand_in(engine: Engine, image: str, tarball: Path) -> None:
    with open(tarball, "rb") as data:
        done = subprocess.run(
            [
                engine.client,
                "import",
                "--change",
                'CMD ["bash"]',
                "--change",
                f"LABEL {STAND_IN_LABEL}={STAND_IN_VALUE}",
                "-",
                image,
            ],
            env={**os.environ, **engine.env},
            stdin=data,
            capture_output=True,
            timeout=300,
            check=False,
        )
    if done.returncode != 0:
        raise BuildFailed(f"docker import {image} failed: {done.stderr.decode(errors='replace')}")


def image_present(engine: Engine, image: str) -> bool:
    return engine.run("image", "inspect", image, check=False, timeout=30).returncode == 0


def is_stand_in(engine: Engine, image: str) -> bool:
    """Whether `image` is (or was built on) the debootstrap stand-in, by its label."""
    done = engine.run(
        "image",
        "inspect",
        "--format",
        f'{{{{ index .Config.Labels "{STAND_IN_LABEL}" }}}}',
        image,
        check=False,
        timeout=30,
    )
    return done.returncode == 0 and done.stdout.strip() == STAND_IN_VALUE


def ensure_base_image(
    engine: Engine, image: str | None = None, pull: bool | None = None, log: Path | None = None
) -> bool:
    """Make the Dockerfile's base image present; returns True when it is the local stand-in.

    Order: already present; a pull bounded by a short timeout (by default only on an engine
    that was already running, i.e. a normal machine); a debootstrap stand-in from the cached
    tarball or built fresh.
    """
    image = image or base_image()
    if image_present(engine, image):
        stand_in = is_stand_in(engine, image)
    else:
        stand_in = True
        if pull is None:
            pull = not engine.private
        if pull:
            try:
                engine.run("pull", image, timeout=PULL_SECONDS)
                stand_in = False
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                engine.notes.append(f"pulling {image} failed within {PULL_SECONDS:g} s")
        if stand_in:
            suite = debian_suite(image)
            if suite is None:
                raise EngineUnavailable(
                    f"base image {image} is missing, cannot be pulled, and debootstrap can only "
                    f"stand in for debian:<suite>-slim"
                )
            tarball = stand_in_tarball(suite)
            if not tarball.exists():
                build_stand_in_rootfs(suite, tarball, log or CACHE_DIR / "debootstrap.log")
            import_stand_in(engine, image, tarball)
    if stand_in:
        engine.notes.append(STAND_IN_NOTICE.format(image=image))
    return stand_in


# --- service image ------------------------------------------------------------------------------


def ca_bundle() -> Path | None:
    """The host's CA bundle, handed to pip in the build as a BuildKit secret (never stored)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), *CA_BUNDLES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build_command(engine: Engine, tag: str, context: Path = REPO_ROOT) -> list[str]:
    if not engine.buildkit:
        raise BuildFailed(
            "BuildKit does not work with this engine; the Dockerfile hands the CA bundle to pip "
            "with a BuildKit secret mount, which the classic builder cannot parse"
        )
    cmd = [engine.client, "build", "--progress=plain", "-t", tag, "-f", str(DOCKERFILE)]
    bundle = ca_bundle()
    if bundle is not None:
        cmd += ["--secret", f"id=ca,src={bundle}"]
    return [*cmd, str(context)]


def build_image(
    engine: Engine,
    tag: str = IMAGE_TAG,
    log: Path | None = None,
    stream: bool = False,
) -> None:
    """Build the service image from the unchanged Dockerfile (raises BuildFailed)."""
    cmd = build_command(engine, tag)
    env = {**os.environ, **engine.env}
    if stream:
        done = subprocess.run(cmd, env=env, timeout=BUILD_SECONDS, check=False)
        if done.returncode != 0:
            raise BuildFailed(f"docker build exited {done.returncode}")
        return
    log = log or CACHE_DIR / "docker-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        done = subprocess.run(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_SECONDS, check=False
        )
    if done.returncode != 0:
        raise BuildFailed(f"docker build exited {done.returncode}; end of {log}:\n{_tail(log, 40)}")


def prepare(tag: str = IMAGE_TAG, stream: bool = False) -> Engine:
    """Engine, base image and service image in one call; the caller must `engine.stop()`."""
    engine = ensure_engine()
    try:
        ensure_base_image(engine)
        build_image(engine, tag, stream=stream)
    except BaseException:
        engine.stop()
        raise
    return engine


def say(line: str) -> None:
    """The CLI's report, one line per event, on stdout."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="engine + base image + service image")
    build.add_argument("--tag", default=IMAGE_TAG)
    build.add_argument("--keep", action="store_true", help="leave a private engine running")
    sub.add_parser("stop", help="stop a private engine left running by `build --keep`")
    args = parser.parse_args(argv)

    if args.command == "stop":
        pid = _read_pid(state_paths()["pidfile"])
        if pid is None or not _pid_alive(pid):
            say("no private dockerd running")
            return 0
        fd = _lock(state_paths()["run"] / "users.lock", fcntl.LOCK_SH)
        engine = Engine(client=docker_client() or "docker", env={}, pid=pid, users_lock=fd)
        engine.stop()
        for note in engine.notes:
            say(note)
        if not engine.notes:
            say(f"stopped private dockerd (pid {pid})")
        return 0

    started = time.monotonic()
    try:
        engine = prepare(args.tag, stream=True)
    except (EngineUnavailable, BuildFailed) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    try:
        for note in engine.notes:
            say(note)
        say(f"built {args.tag} in {time.monotonic() - started:.0f} s (BuildKit)")
        if engine.private and args.keep:
            say(
                f"private dockerd pid {engine.pid}; use it with: "
                f"export DOCKER_HOST={engine.env['DOCKER_HOST']}"
            )
            say("stop it with: python -m scripts.verify.core.docker_engine stop")
            engine.pid = None  # keep it running
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
