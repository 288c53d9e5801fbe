"""The application factory: configuration errors, the lifespan, the wiring."""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.app.conftest import frame


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_profile_for_another_allocator_exits_2(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(memory_profile="jemalloc")  # this test process runs glibc
    with pytest.raises(SystemExit) as info:
        create_app(settings)
    assert info.value.code == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("configuration error: MEMORY_PROFILE='jemalloc' needs jemalloc")
    assert "glibc is running" in lines[0] and "python -m app.launch" in lines[0]


def test_profile_for_the_running_allocator_is_accepted(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(memory_profile="glibc-tuned"))
    assert frame(app).memory.status_document()["profile"] == "glibc-tuned"


def test_bad_environment_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEMORY_CLEANUP_INTERVAL", "abc")
    with pytest.raises(SystemExit) as info:
        create_app()
    assert info.value.code == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("configuration error: MEMORY_CLEANUP_INTERVAL='abc': ")


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "env.sqlite"))
    monkeypatch.setenv("MAX_BODY_MB", "2")
    app = create_app()
    assert app.state.bulk.service.store.path == str(tmp_path / "env.sqlite")
    assert app.state.bulk.max_body_bytes == 2 * 1024 * 1024


def test_lifespan_initializes_the_database_and_runs_the_loop(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    db = tmp_path / "data" / "service.db"
    app = create_app(make_settings(database_path=str(db), threadpool_size=7))
    assert not db.exists()
    assert not frame(app).memory.loop.running
    with TestClient(app) as client:
        assert frame(app).memory.loop.running
        limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)
        assert limiter.total_tokens == 7
        assert client.get("/products/SKU-04999").status_code == 200
    assert not frame(app).memory.loop.running
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM products").fetchone() == (5000,)


def test_lifespan_shortens_the_gil_switch_interval(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    before = sys.getswitchinterval()
    app = create_app(make_settings(database_path=str(tmp_path / "s.db"), switch_interval_ms=2))
    try:
        with TestClient(app):
            assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)


def test_cleanup_off_runs_no_loop_and_no_guard(
    serve: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = serve(memory_cleanup=False)
    memory = frame(client.app).memory
    assert not memory.loop.running
    assert memory.threshold_check is None
    assert client.get("/products/SKU-00001").status_code == 200
    assert memory.activity.requests == 1  # traffic is still counted


def test_cleanup_hook_purges_the_expired_results(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    service = app.state.bulk.service
    assert service.purge_expired in frame(app).memory.loop.hooks
    assert service.all_expired_at in frame(app).memory.loop.expiry_sources


def test_settings_reach_the_manager_and_the_cache(make_settings: Callable[..., Settings]) -> None:
    app = create_app(
        make_settings(
            memory_cleanup_interval=12,
            memory_cleanup_threshold_mb=50,
            memory_limit_mb=300,
            # The budget starts from this process's RSS, which is pytest's and grows with the
            # suite: a 300 MB limit leaves no room for a bulk body late in a run. Not the subject.
            memory_admission=False,
            memory_idle_release_seconds=2,
            memory_release_min_mb=8,
            memory_check_min_seconds=0.5,
            cache_ttl_seconds=30,
            cache_max_entries=9,
            cache_max_mb=3,
            max_bulk_records=77,
        )
    )
    memory = frame(app).memory
    mb = 1024 * 1024
    config = memory.config
    assert (config.interval_seconds, config.threshold_bytes) == (12, 50 * mb)
    assert (config.idle_release_seconds, config.release_min_bytes) == (2, 8 * mb)
    assert memory.limit_bytes == 300 * mb
    assert memory.threshold_check.threshold_bytes == 50 * mb
    cache = app.state.bulk.service.cache
    assert (cache.ttl, cache.max_entries, cache.max_bytes) == (30, 9, 3 * mb)
    assert app.state.bulk.service.max_records == 77


def test_log_level_applies(make_settings: Callable[..., Settings]) -> None:
    create_app(make_settings(log_level="warning"))
    assert logging.getLogger().level == logging.WARNING


def test_a_misspelt_setting_gets_one_warning_line_at_startup(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MEMORY_CLEANUP_INTERVALL", "5")
    monkeypatch.setenv("CACHE_MAX_MBS", "8")  # the workload's prefix, checked with its settings
    create_app(make_settings())
    warnings = [line for line in stderr_lines(capsys) if "setting warning" in line]
    assert len(warnings) == 2, warnings
    assert "MEMORY_CLEANUP_INTERVALL is not a setting" in warnings[1]
    assert warnings[1].endswith("did you mean MEMORY_CLEANUP_INTERVAL?")
    assert warnings[0].endswith("did you mean CACHE_MAX_MB?")
