"""Start the service under an allocator profile: `python -m app.launch`.

The profile's variables (LD_PRELOAD above all) only work if they are in the environment before
the interpreter starts, so this sets them and then execs uvicorn in place of itself: signals from
Docker or Railway reach uvicorn directly.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import platform
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import NoReturn

from app.config import ConfigError, Settings
from app.profiles import Profile, ProfileError, load_profiles

log = logging.getLogger("launch")

EDGE_PROTOCOL = "app.edge.protocol:EdgeH11Protocol"
# Free-threaded CPython stops with a fatal error at start on PYTHONMALLOC=malloc; this profile
# keeps jemalloc for C-level allocations without it (Python's objects live in mimalloc there).
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
FREE_THREADED_PROFILE = "jemalloc"
# The Debian/Ubuntu package of each library a profile preloads, for the error that names it.
PACKAGES = {"libjemalloc.so.2": "libjemalloc2", "libtcmalloc_minimal.so.4": "libtcmalloc-minimal4"}
# CPython's own mimalloc: a PYTHONMALLOC value only 3.13 and later builds with it accept.
CPYTHON_MIMALLOC = "mimalloc"
# Where Debian/Ubuntu (both architectures), Alpine and RHEL put shared libraries.
LIBRARY_DIRS = ("/usr/lib/*-linux-gnu", "/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/lib")


def _in_linker_cache(soname: str) -> bool:
    """Whether `ldconfig -p` lists the soname: the folders ld.so.conf adds (/usr/local/lib...)."""
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if os.path.exists(ldconfig):
            try:
                listing = subprocess.run(
                    [ldconfig, "-p"], capture_output=True, text=True, timeout=5, check=False
                ).stdout
            except (OSError, subprocess.SubprocessError):
                return False
            return any(line.split(" (", 1)[0].strip() == soname for line in listing.splitlines())
    return False


def library_available(soname: str) -> bool:
    """Whether the dynamic linker can find a bare soname; checked before exec, because ld.so only
    warns about a missing LD_PRELOAD entry and runs on without it."""
    if _in_linker_cache(soname):
        return True
    extra = os.environ.get("LD_LIBRARY_PATH", "").split(":")
    for folder in [*filter(None, extra), *LIBRARY_DIRS]:
        if any(os.path.exists(os.path.join(d, soname)) for d in glob.glob(folder)):
            return True
    return False


def interpreter_accepts(pythonmalloc: str, executable: str = sys.executable) -> bool:
    """Whether this interpreter starts with PYTHONMALLOC set so: asked of a real start, since
    a build can leave mimalloc out (--without-mimalloc) whatever its version, and one without
    it stops at start with a fatal error, after the launcher has exec'd it."""
    try:
        done = subprocess.run(
            [executable, "-S", "-c", "pass"],
            env={**os.environ, "PYTHONMALLOC": pythonmalloc},
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _check_object_allocator(profile: Profile) -> None:
    """A profile asking for CPython's mimalloc stops here, in one line, where this interpreter
    has none, rather than in CPython's fatal error once the server is exec'd."""
    if profile.env.get("PYTHONMALLOC") != CPYTHON_MIMALLOC:
        return
    if not interpreter_accepts(CPYTHON_MIMALLOC):
        version = ".".join(map(str, sys.version_info[:3]))
        raise ProfileError(
            f"MEMORY_PROFILE={profile.name!r} sets PYTHONMALLOC=mimalloc, which CPython {version} "
            "here does not have (CPython 3.13 and later bundle it): use another profile or "
            "a newer interpreter"
        )


def choose_profile(environ: Mapping[str, str], free_threaded: bool = FREE_THREADED) -> Profile:
    """The requested profile; the default one falls back to glibc, loudly, where it cannot load.

    A profile named explicitly must be honoured or startup fails: running without the allocator
    someone asked for would make every memory figure afterwards a lie.
    """
    profiles = load_profiles()
    requested = environ.get("MEMORY_PROFILE") or None
    profile = profiles.get(requested)
    if free_threaded and profile.env.get("PYTHONMALLOC", CPYTHON_MIMALLOC) != CPYTHON_MIMALLOC:
        line = (
            f"MEMORY_PROFILE={profile.name!r} sets PYTHONMALLOC={profile.env['PYTHONMALLOC']}, "
            f"which free-threaded CPython refuses at start: use MEMORY_PROFILE="
            f"{FREE_THREADED_PROFILE!r}"
        )
        if requested is not None:
            raise ProfileError(line)
        log.warning("default %s; falling back to it", line.removeprefix("MEMORY_PROFILE="))
        profile = profiles.get(FREE_THREADED_PROFILE)
    _check_object_allocator(profile)
    if profile.preload is None or library_available(profile.preload):
        if profile.preload and platform.system() != "Linux":
            raise ProfileError(
                f"MEMORY_PROFILE={profile.name!r} preloads a library; that needs Linux"
            )
        return profile
    if requested is not None:
        raise ProfileError(
            f"MEMORY_PROFILE={profile.name!r} needs {profile.preload}, which is not installed"
            + (
                f" (Debian/Ubuntu: apt-get install {PACKAGES[profile.preload]})"
                if profile.preload in PACKAGES
                else ""
            )
        )
    log.warning(
        "default profile %r needs %s, which is not installed: falling back to 'glibc'",
        profile.name,
        profile.preload,
    )
    return profiles.get("glibc")


def uvicorn_host(settings: Settings) -> str:
    """The --host that makes uvicorn listen where HOST says, on both families for `::`.

    With one worker uvicorn binds through asyncio's create_server, which sets IPV6_V6ONLY on an
    IPv6 socket, so `::` would refuse IPv4; an empty host there opens one socket per family.
    With several workers uvicorn binds one socket itself without IPV6_V6ONLY, so `::` takes
    IPv4 too (Linux's default net.ipv6.bindv6only=0), while an empty host would be IPv4 only.
    """
    if settings.host in ("::", "[::]"):
        return "" if settings.web_concurrency == 1 else "::"
    return settings.host


def uvicorn_argv(settings: Settings) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "app.serve",  # uvicorn's command line; a worker that cannot start exits 3 (app/serve.py)
        "app.main:create_app",
        "--factory",
        "--host",
        uvicorn_host(settings),
        "--port",
        str(settings.port),
        "--workers",
        str(settings.web_concurrency),
        "--log-level",
        settings.log_level,
        "--timeout-graceful-shutdown",
        str(settings.shutdown_grace_seconds),
        "--proxy-headers",
        "--forwarded-allow-ips",
        settings.forwarded_allow_ips,
        "--no-server-header",
        "--no-access-log",  # the app writes its own, redacted and bounded (app/edge/accesslog.py)
    ]
    # h11 on asyncio, named, never uvicorn's "auto": that picks httptools and uvloop wherever
    # they are installed (the dev venv has them), so a service run from a checkout would
    # measure another stack than the image's (lab/stack/README.md). With admission on, h11 with
    # a header deadline and a connection cap (uvicorn has neither); h11 caps a head at 16 KB.
    protocol = EDGE_PROTOCOL if settings.memory_admission else "h11"
    argv += ["--loop", "asyncio", "--http", protocol]
    if settings.limit_max_requests:
        argv += ["--limit-max-requests", str(settings.limit_max_requests)]
        if settings.limit_max_requests_jitter:
            argv += ["--limit-max-requests-jitter", str(settings.limit_max_requests_jitter)]
    return argv


def granian_argv(settings: Settings) -> list[str]:
    """Granian serving the same app: a peer to measure against, not the service as built.

    Its own supervisor replaces a worker whose RSS stays over WORKERS_MAX_RSS_MB, starting the
    new one before the old one stops; GRANIAN_* variables (e.g. GRANIAN_RSS_SAMPLE_INTERVAL)
    reach it through the environment.
    """
    argv = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "app.main:create_app",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.web_concurrency),
        "--log-level",
        settings.log_level,
        "--no-access-log",  # the app writes its own (app/edge/accesslog.py)
    ]
    if settings.shutdown_grace_seconds:
        argv += ["--workers-kill-timeout", str(settings.shutdown_grace_seconds)]
    if settings.workers_max_rss_mb is not None:
        argv += ["--workers-max-rss", str(settings.workers_max_rss_mb)]
    return argv


def server_argv(settings: Settings) -> list[str]:
    """The command line of the server SERVER names."""
    if settings.server == "granian":
        if importlib.util.find_spec("granian") is None:
            raise ConfigError(
                ["configuration error: SERVER='granian' needs granian installed (make .venv/.dev)"]
            )
        return granian_argv(settings)
    return uvicorn_argv(settings)


@contextmanager
def configuration_errors() -> Iterator[None]:
    """A bad profile or setting ends the process with its one line and exit status 2, before a
    server starts, so a supervisor sees the failure and the log says what to fix."""
    try:
        yield
    except ProfileError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        raise SystemExit(2) from None
    except ConfigError as exc:
        sys.stderr.write("\n".join(exc.lines) + "\n")
        raise SystemExit(2) from None


ArgvEdit = Callable[[list[str]], list[str]]


def launch(edit: ArgvEdit | None = None) -> NoReturn:
    """The launcher's steps, in the one order every start of the service takes: the profile, its
    environment, the settings checked (a bad one exits 2 with its line), the server command, and
    exec in place of this process. ``edit`` changes the command line only: the instruments in
    lab/ start the same service with another HTTP stack or app factory this way."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     [launch] %(message)s")
    with configuration_errors():
        profile = choose_profile(os.environ)
        env, kept = profile.environment(os.environ)
        os.environ.update(env)  # Settings must see the profile's values, as the server will
        from app.main import load_configuration  # the workloads' settings are checked too

        settings = load_configuration()
        argv = server_argv(settings)
        if edit is not None:
            argv = edit(argv)
    for name in kept:
        log.info("%s set in the environment; profile %r value not applied", name, profile.name)
    log.info(
        "profile %s (allocator %s%s%s) on %s:%d, %d worker(s), %s",
        profile.name,
        profile.allocator,
        f", LD_PRELOAD={env['LD_PRELOAD']}" if profile.preload else "",
        # Which allocator holds Python's objects: pymalloc unless the profile says otherwise.
        f", PYTHONMALLOC={env['PYTHONMALLOC']}" if env.get("PYTHONMALLOC") else "",
        settings.host,
        settings.port,
        settings.web_concurrency,
        settings.server,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


def main() -> None:
    launch()


if __name__ == "__main__":
    main()
