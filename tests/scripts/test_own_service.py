"""The user's own service: how its command is run, what its environment and `docker run` line
carry, and a real command whose scenario cannot reach it stopped within seconds with the
failures named (python's own http.server: no memory package, no status route)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.verify.core.loadrun import locust_available
from scripts.verify.core.own_service import CommandServer, ImageService, command_argv

REPO = Path(__file__).resolve().parents[2]


def command_server(tmp_path: Path, **extra: object) -> CommandServer:
    return CommandServer(
        "serve --port {port}",
        log_path=tmp_path / "server.log",
        cleanup_interval_seconds=5,
        cache_ttl_seconds=10,
        limit_mb=500,
        workdir=tmp_path,
        **extra,  # type: ignore[arg-type]
    )


def test_a_simple_command_is_run_without_a_shell_and_a_compound_one_with_it() -> None:
    assert command_argv("uvicorn main:app --port 8123") == ["uvicorn", "main:app", "--port", "8123"]
    assert command_argv("uvicorn 'my app:app'") == ["uvicorn", "my app:app"]
    for compound in ("cd svc && uvicorn main:app", "WORKERS=2 serve", "serve > log", "a; b"):
        assert command_argv(compound) == ["/bin/sh", "-c", compound]


def test_the_command_gets_its_port_token_and_the_presets_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SERVICE_SETTING", "kept")
    server = command_server(tmp_path, overrides={"WORKERS": "2"}, token="t" * 32)
    assert server.command() == ["serve", "--port", str(server.port)]
    env = server.environment()
    assert env["PORT"] == str(server.port)
    assert env["ADMIN_TOKEN"] == server.token == "t" * 32
    assert env["MEMORY_CLEANUP_INTERVAL"] == "5" and env["CACHE_TTL_SECONDS"] == "10"
    assert env["MEMORY_LIMIT_MB"] == "500"  # no cgroup: the limit it is judged against
    assert env["WORKERS"] == "2" and env["MY_SERVICE_SETTING"] == "kept"  # the caller's own
    assert server.profile == "own command"


def test_the_users_image_runs_under_a_hard_limit_and_listens_on_port(tmp_path: Path) -> None:
    # No Docker engine here: the `docker run` line is what is checked.
    service = ImageService(
        engine=None,
        image="ghcr.io/someone/their-service:1.2",
        log_path=tmp_path / "server.log",
        cleanup_interval_seconds=5,
        cache_ttl_seconds=10,
        limit_mb=300,
        overrides={"WORKERS": "2"},
        health_path="/ready",
        status_path="/internal/memory",
    )
    argv = service.run_argv()
    assert argv[-1] == "ghcr.io/someone/their-service:1.2"
    assert "--memory=300m" in argv and "--memory-swap=300m" in argv
    assert f"127.0.0.1:{service.port}:8000" in argv
    env = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-e")
    assert env == {
        "PORT": "8000",
        "ADMIN_TOKEN": service.token,
        "MEMORY_CLEANUP_INTERVAL": "5",
        "CACHE_TTL_SECONDS": "10",
        "WORKERS": "2",
    }  # no MEMORY_PROFILE: the image's allocator is its own
    assert (service.health_path, service.status_path) == ("/ready", "/internal/memory")


UNREACHABLE_USERS = '''from locust import HttpUser, constant, task


class Lost(HttpUser):
    wait_time = constant(0.1)

    @task
    def missing(self) -> None:
        self.client.get("/no-such-route")
'''


@pytest.mark.skipif(not locust_available(), reason="needs Locust")
def test_a_scenario_that_cannot_reach_the_service_stops_within_seconds(tmp_path: Path) -> None:
    locustfile = tmp_path / "users.py"
    locustfile.write_text(UNREACHABLE_USERS)
    (tmp_path / "site").mkdir()
    serve = f"{sys.executable} -m http.server {{port}} -b 127.0.0.1 -d {tmp_path / 'site'}"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable, "-m", "scripts.verify", "run", "--preset", "short", "--no-plot",
            "--command", serve,
            "--health", "/", "--locustfile", str(locustfile), "--out", str(tmp_path / "out"),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "ADMIN_TOKEN"},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot reach" in done.stderr and "every request failed" in done.stderr
    assert "GET /no-such-route" in done.stderr and "404" in done.stderr
    assert elapsed < 40  # the short preset's load alone is 25 s, its whole run near a minute
