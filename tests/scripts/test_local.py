"""How the local service is started: the caller's memory tuning is not inherited, the preset's
and --set's settings are applied, and the server is not run from the checkout (no .env)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.verify.core.local import LocalServer, clean_environment


def server(tmp_path: Path, **extra: object) -> LocalServer:
    return LocalServer(
        profile="glibc",
        workdir=tmp_path,
        log_path=tmp_path / "server.log",
        cleanup_interval_seconds=5,
        cache_ttl_seconds=10,
        limit_mb=500,
        **extra,  # type: ignore[arg-type]
    )


def test_memory_tuning_in_the_callers_shell_is_not_inherited() -> None:
    base = {
        "PATH": "/usr/bin",
        "LD_PRELOAD": "libtcmalloc.so.4",
        "MALLOC_CONF": "narenas:64",
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=1",
        "MEMORY_CLEANUP": "0",
        "CACHE_MAX_MB": "1",
        "PYTHONMALLOC": "debug",
    }
    assert clean_environment(base) == {"PATH": "/usr/bin"}


def test_the_preset_and_overrides_set_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMORY_CLEANUP_INTERVAL", "3600")
    env = server(tmp_path, overrides={"MEMORY_CLEANUP_THRESHOLD_MB": "50"}).environment()
    assert env["MEMORY_PROFILE"] == "glibc"
    assert env["HOST"] == "127.0.0.1"
    assert env["MEMORY_CLEANUP_INTERVAL"] == "5"
    assert env["CACHE_TTL_SECONDS"] == "10"
    assert env["MEMORY_LIMIT_MB"] == "500"
    assert env["MEMORY_CLEANUP_THRESHOLD_MB"] == "50"
    assert env["DATABASE_PATH"].startswith(str(tmp_path))
    assert len(env["ADMIN_TOKEN"]) >= 16


def test_the_service_runs_from_its_work_folder_not_the_checkout(tmp_path: Path) -> None:
    local = server(tmp_path).start()
    try:
        local.wait_healthy(60)
        document = local.memory_status()
        assert document is not None
        assert document["cleanup"]["interval_seconds"] == 5.0
        pid = local.process.pid  # type: ignore[union-attr]
        assert Path(f"/proc/{pid}/cwd").resolve() == tmp_path.resolve()  # so no .env is read
    finally:
        local.stop()
    assert local.exit_code() is not None
