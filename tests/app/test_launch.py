"""The launcher: library check, profile choice, uvicorn's argv, and how bad config exits."""

from __future__ import annotations

import glob
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from uvicorn.main import main as uvicorn_cli

from app import launch
from app.config import ConfigError, load_settings
from app.profiles import ProfileError, load_profiles
from lab import jemalloc as fetched_jemalloc
from tests.app.conftest import REPO, linker_cache, service_free_environ


def parse_uvicorn(argv: list[str]) -> dict[str, object]:
    """uvicorn's own command line parser over the arguments after `python -m app.serve` (uvicorn's
    command line, app/serve.py)."""
    assert argv[:3] == [sys.executable, "-m", "app.serve"]
    with uvicorn_cli.make_context("uvicorn", argv[3:]) as ctx:
        return dict(ctx.params)


def run_launch(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = service_free_environ()
    environ.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "app.launch"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


# library_available


def test_installed_jemalloc_is_found(jemalloc: str) -> None:
    assert launch.library_available(jemalloc)


def test_made_up_soname_is_not_found() -> None:
    assert not launch.library_available("libnot-an-allocator-7f3a.so.9")


def test_library_available_agrees_with_the_linker_cache() -> None:
    standard = {os.path.realpath(d) for pattern in launch.LIBRARY_DIRS for d in glob.glob(pattern)}
    elsewhere = [
        soname
        for soname, path in linker_cache().items()
        if os.path.realpath(os.path.dirname(path)) not in standard and os.path.exists(path)
    ]
    if not elsewhere:
        pytest.skip("every library the linker knows here sits in a standard folder")
    assert [soname for soname in elsewhere if not launch.library_available(soname)] == []


def test_ld_library_path_is_searched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "libcustom-alloc.so.1").write_bytes(b"")
    assert not launch.library_available("libcustom-alloc.so.1")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/nonexistent:{tmp_path}")
    assert launch.library_available("libcustom-alloc.so.1")


# choose_profile


def test_default_profile_when_its_library_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "library_available", lambda soname: True)
    default = load_profiles().default
    assert launch.choose_profile({}).name == default
    assert launch.choose_profile({"MEMORY_PROFILE": ""}).name == default


def test_default_profile_falls_back_to_glibc_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(launch, "library_available", lambda soname: False)
    with caplog.at_level(logging.WARNING, logger="launch"):
        profile = launch.choose_profile({})
    assert profile.name == "glibc"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"'{load_profiles().default}'" in message
    assert "libjemalloc.so.2" in message and "'glibc'" in message


@pytest.mark.parametrize(
    ("name", "library", "package"),
    [
        ("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
        ("jemalloc-nopymalloc", "libjemalloc.so.2", "libjemalloc2"),
        ("tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
    ],
)
def test_explicit_profile_with_missing_library_is_an_error(
    monkeypatch: pytest.MonkeyPatch, name: str, library: str, package: str
) -> None:
    monkeypatch.setattr(launch, "library_available", lambda soname: False)
    with pytest.raises(ProfileError) as info:
        launch.choose_profile({"MEMORY_PROFILE": name})
    message = str(info.value)
    assert "\n" not in message
    assert f"MEMORY_PROFILE={name!r}" in message
    assert library in message and f"apt-get install {package}" in message


def test_explicit_glibc_profile_needs_no_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "library_available", lambda soname: False)
    assert launch.choose_profile({"MEMORY_PROFILE": "glibc-tuned"}).name == "glibc-tuned"


def test_pythonmalloc_values_are_asked_of_a_real_start() -> None:
    assert launch.interpreter_accepts("malloc")
    assert not launch.interpreter_accepts("no-such-allocator")
    if sys.version_info < (3, 13):
        assert not launch.interpreter_accepts("mimalloc")  # CPython 3.13 added it


@pytest.mark.parametrize("name", ["python-mimalloc", "python-mimalloc-jemalloc"])
def test_cpython_mimalloc_profile_without_it_exits_2_with_one_line(
    tmp_path: Path, name: str
) -> None:
    if launch.interpreter_accepts("mimalloc"):
        pytest.skip("this interpreter has CPython's mimalloc; the profile starts (test_memory.py)")
    done = run_launch(tmp_path, MEMORY_PROFILE=name)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    version = ".".join(map(str, sys.version_info[:3]))
    assert lines[0] == (
        f"configuration error: MEMORY_PROFILE={name!r} sets PYTHONMALLOC=mimalloc, which "
        f"CPython {version} here does not have (CPython 3.13 and later bundle it): use another "
        "profile or a newer interpreter"
    )


def test_free_threaded_accepts_a_cpython_mimalloc_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Free-threaded builds refuse PYTHONMALLOC=malloc, not mimalloc: their objects live there."""
    monkeypatch.setattr(launch, "interpreter_accepts", lambda value: True)
    monkeypatch.setattr(launch, "library_available", lambda soname: True)
    chosen = launch.choose_profile({"MEMORY_PROFILE": "python-mimalloc"}, free_threaded=True)
    assert chosen.name == "python-mimalloc"


def test_unknown_profile_is_an_error() -> None:
    with pytest.raises(ProfileError, match="MEMORY_PROFILE='mimalloc' is not a profile"):
        launch.choose_profile({"MEMORY_PROFILE": "mimalloc"})


def test_preload_profile_needs_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "library_available", lambda soname: True)
    monkeypatch.setattr(launch.platform, "system", lambda: "Darwin")
    with pytest.raises(ProfileError, match="needs Linux"):
        launch.choose_profile({"MEMORY_PROFILE": "jemalloc"})
    assert launch.choose_profile({"MEMORY_PROFILE": "glibc"}).name == "glibc"


# uvicorn_argv


def test_uvicorn_argv_is_accepted_by_uvicorn() -> None:
    settings = load_settings(host="127.0.0.1", port=8123, web_concurrency=2, log_level="warning")
    argv = launch.uvicorn_argv(settings)
    params = parse_uvicorn(argv)
    assert params["app"] == "app.main:create_app"
    assert params["factory"] is True
    assert (params["host"], params["port"], params["workers"]) == ("127.0.0.1", 8123, 2)
    assert params["log_level"] == "warning"
    assert params["timeout_graceful_shutdown"] == 10
    assert params["proxy_headers"] is True
    assert params["forwarded_allow_ips"] == "127.0.0.1,::1"  # not "*": any peer could forge
    assert params["server_header"] is False
    assert params["access_log"] is False  # the app writes its own (app/edge/accesslog.py)
    assert params["limit_max_requests"] is None
    assert params["limit_max_requests_jitter"] == 0


def test_uvicorn_argv_passes_proxies_and_request_limit() -> None:
    settings = load_settings(
        forwarded_allow_ips="100.64.0.0/10, fd12::/16",
        limit_max_requests=5000,
        limit_max_requests_jitter=500,
        shutdown_grace_seconds=3,
        web_concurrency=2,
    )
    params = parse_uvicorn(launch.uvicorn_argv(settings))
    assert params["forwarded_allow_ips"] == "100.64.0.0/10,fd12::/16"
    assert params["access_log"] is False
    assert params["limit_max_requests"] == 5000
    assert params["limit_max_requests_jitter"] == 500
    assert params["timeout_graceful_shutdown"] == 3


@pytest.mark.parametrize(
    ("host", "workers", "expected"),
    [("::", 1, ""), ("::", 2, "::"), ("0.0.0.0", 1, "0.0.0.0"), ("::1", 1, "::1")],
)
def test_any_ipv6_address_is_passed_so_uvicorn_also_serves_ipv4(
    host: str, workers: int, expected: str
) -> None:
    """One worker binds through asyncio (IPV6_V6ONLY on): an empty host opens both families."""
    settings = load_settings(host=host, web_concurrency=workers)
    assert parse_uvicorn(launch.uvicorn_argv(settings))["host"] == expected


def parse_granian(argv: list[str]) -> dict[str, object]:
    """Granian's own command line parser over the arguments after `python -m granian`."""
    granian_cli = pytest.importorskip("granian.cli")
    assert argv[:3] == [sys.executable, "-m", "granian"]
    with granian_cli.cli.make_context("granian", argv[3:]) as ctx:
        return dict(ctx.params)


def test_granian_argv_is_accepted_by_granian() -> None:
    settings = load_settings(
        server="granian", workers_max_rss_mb=120, host="::", port=8125, shutdown_grace_seconds=4
    )
    params = parse_granian(launch.server_argv(settings))
    assert (params["app"], params["factory"], params["interface"].value) == (
        "app.main:create_app",
        True,
        "asgi",
    )
    assert (params["host"], params["port"], params["workers"]) == ("::", 8125, 1)
    assert (params["workers_max_rss"], params["log_access_enabled"]) == (120, False)
    assert params["workers_kill_timeout"] == 4


def test_server_argv_defaults_to_uvicorn() -> None:
    assert parse_uvicorn(launch.server_argv(load_settings()))["app"] == "app.main:create_app"


def test_granian_not_installed_is_one_config_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as info:
        launch.server_argv(load_settings(server="granian"))
    assert info.value.lines == [
        "configuration error: SERVER='granian' needs granian installed (make .venv/.dev)"
    ]


def test_fractional_shutdown_grace_is_refused_before_uvicorn_sees_it() -> None:
    # uvicorn's --timeout-graceful-shutdown takes whole seconds; 2.5 must stop at the config.
    with pytest.raises(ConfigError) as info:
        load_settings(shutdown_grace_seconds=2.5)
    assert info.value.lines[0].startswith("configuration error: SHUTDOWN_GRACE_SECONDS=2.5")


# main(), in process: everything up to the exec


def test_main_execs_uvicorn_with_the_profile_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    class Execed(Exception):
        pass

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        calls.append((path, argv, env))
        raise Execed

    monkeypatch.setattr(launch.os, "execve", fake_execve)
    monkeypatch.setattr(launch, "library_available", lambda soname: True)
    monkeypatch.setenv("MEMORY_PROFILE", "jemalloc")
    monkeypatch.setenv("MALLOC_CONF", "narenas:1")
    monkeypatch.setenv("PORT", "8124")
    with caplog.at_level(logging.INFO, logger="launch"), pytest.raises(Execed):
        launch.main()
    ((path, argv, env),) = calls
    assert path == sys.executable == argv[0]
    assert parse_uvicorn(argv)["port"] == 8124
    assert env["LD_PRELOAD"].split()[0] == "libjemalloc.so.2"
    assert env["MALLOC_CONF"] == "narenas:1"
    assert env["MEMORY_PROFILE"] == "jemalloc"
    assert any("MALLOC_CONF set in the environment" in r.getMessage() for r in caplog.records)


# python -m app.launch, as a real process


@pytest.mark.parametrize(
    ("name", "value"),
    [("MEMORY_CLEANUP_INTERVAL", "abc"), ("PORT", "-1"), ("MEMORY_CLEANUP", "perhaps")],
)
def test_bad_variable_exits_2_with_one_stderr_line(tmp_path: Path, name: str, value: str) -> None:
    done = run_launch(tmp_path, MEMORY_PROFILE="glibc", **{name: value})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"configuration error: {name}={value!r}: ")
    assert done.stdout == ""


def test_two_bad_variables_give_two_lines(tmp_path: Path) -> None:
    done = run_launch(tmp_path, MEMORY_PROFILE="glibc", PORT="x", CACHE_MAX_ENTRIES="0")
    assert done.returncode == 2
    assert sorted(line.split("=")[0] for line in done.stderr.splitlines()) == [
        "configuration error: CACHE_MAX_ENTRIES",
        "configuration error: PORT",
    ]


def test_unknown_profile_exits_2_with_one_line(tmp_path: Path) -> None:
    done = run_launch(tmp_path, MEMORY_PROFILE="hoard")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("configuration error: MEMORY_PROFILE='hoard' is not a profile")


def test_explicit_profile_without_its_library_exits_2(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'default = "glibc"\n[profiles.glibc]\nallocator = "glibc"\n'
        '[profiles.ghost]\nallocator = "jemalloc"\npreload = "libghost-alloc.so.3"\n'
    )
    done = run_launch(tmp_path, MEMORY_PROFILES_FILE=str(profiles), MEMORY_PROFILE="ghost")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "MEMORY_PROFILE='ghost' needs libghost-alloc.so.3" in lines[0]


def test_threshold_over_limit_exits_2_with_one_line(tmp_path: Path) -> None:
    done = run_launch(
        tmp_path,
        MEMORY_PROFILE="glibc",
        MEMORY_LIMIT_MB="64",
        MEMORY_CLEANUP_THRESHOLD_MB="80",
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("configuration error: MEMORY_CLEANUP_THRESHOLD_MB=80 ")


def test_free_threaded_refuses_an_explicit_pythonmalloc_profile_and_names_one_that_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ProfileError) as refused:
        launch.choose_profile({"MEMORY_PROFILE": "jemalloc-nopymalloc"}, free_threaded=True)
    assert str(refused.value) == (
        "MEMORY_PROFILE='jemalloc-nopymalloc' sets PYTHONMALLOC=malloc, which free-threaded "
        "CPython refuses at start: use MEMORY_PROFILE='jemalloc'"
    )
    assert "PYTHONMALLOC" not in load_profiles().get(launch.FREE_THREADED_PROFILE).env
    with caplog.at_level(logging.WARNING, logger="launch"):
        chosen = launch.choose_profile({}, free_threaded=True)  # the default sets PYTHONMALLOC
    assert "PYTHONMALLOC" not in chosen.env
    assert "free-threaded CPython refuses at start" in caplog.text
    assert launch.choose_profile({"MEMORY_PROFILE": "glibc"}, free_threaded=True).name == "glibc"


@pytest.mark.parametrize("admission", [True, False])
def test_the_http_stack_is_named_whatever_is_installed(admission: bool) -> None:
    # uvicorn's "auto" would take httptools and uvloop from the dev venv, not the image's stack.
    params = parse_uvicorn(launch.uvicorn_argv(load_settings(memory_admission=admission)))
    assert params["loop"] == "asyncio"
    assert params["http"] == ("app.edge.protocol:EdgeH11Protocol" if admission else "h11")


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ("background_thread:true,narenas:2,no_such_option:1", "no_such_option:1"),
        ("background_thread:true,dirty_decay_ms:soon", "dirty_decay_ms:soon"),
    ],
    ids=["unknown-option", "rejected-value"],
)
def test_malloc_conf_that_jemalloc_ignored_stops_the_service_with_one_line(
    tmp_path: Path, jemalloc: str, conf: str, named: str
) -> None:
    """jemalloc only warns about such a pair and runs without it: the service, started the way
    Railway and the image start it, reads its options back and stops before serving."""
    with socket.socket() as probe:  # a free port, in case the check let the server start
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_launch(
        tmp_path, MEMORY_PROFILE="jemalloc", MALLOC_CONF=conf, HOST="127.0.0.1", PORT=str(port)
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"configuration error: MALLOC_CONF={conf!r}: jemalloc 5.")
    assert named in errors[0] and "Traceback" not in done.stderr
    assert "<jemalloc>: Invalid conf" in done.stderr  # jemalloc's own line: a warning only


@pytest.mark.parametrize("suite", ["trixie", "sid"])
def test_the_service_stops_the_same_way_under_each_debian_jemalloc(
    tmp_path: Path, suite: str
) -> None:
    """uvicorn serving create_app under trixie's 5.3.0 and the unstable suite's 5.3.1, each with
    its own glibc through its own loader (5.3.1 needs a newer glibc than Debian 12's), so the
    launcher's exec, which would use the system's loader, is left out."""
    library, loader = fetched_jemalloc.library(suite), fetched_jemalloc.loader(suite)
    if library is None or loader is None:
        reason = f"{suite}'s libjemalloc2 is not unpacked (run `python3 -m lab.jemalloc`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test it: {reason}")
        pytest.skip(reason)
    conf = "background_thread:true,narenas:2,no_such_option:1"
    environ = service_free_environ()
    environ.update(PYTHONPATH=str(REPO), MEMORY_PROFILE="jemalloc", MALLOC_CONF=conf)
    done = subprocess.run(
        [str(loader), "--library-path", str(library.parent), "--preload", str(library)]
        + [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", "0"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1, done.stderr
    version = {"trixie": "5.3.0", "sid": "5.3.1"}[suite]
    assert errors[0].startswith(f"configuration error: MALLOC_CONF={conf!r}: jemalloc {version} ")
    assert "no_such_option:1" in errors[0]
