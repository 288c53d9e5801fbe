"""The reference workload is one seam: without app/workload and its line in app/main.py, the
service still starts through the launcher and serves health, metrics and its memory status.

The tree is copied, the workload deleted from the copy as a forker would delete it, and the copy
started for real (`python -m app.launch`, its own `app` package first on the path).
"""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import build_app
from tests.app.conftest import REPO, frame, service_free_environ
from tests.integration.conftest import free_port

WORKLOAD_LINES = re.compile(r"^.*\bBulkWorkload\b.*\n", re.M)


def without_workload(root: Path) -> Path:
    """app/, profiles/ and pyproject.toml copied to ``root``, app/workload and its lines gone."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "app", root / "app", ignore=ignore)
    shutil.copytree(REPO / "profiles", root / "profiles", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.rmtree(root / "app" / "workload")
    main = root / "app" / "main.py"
    text, removed = WORKLOAD_LINES.subn("", main.read_text())
    assert removed == 2, "the workload should be named on two lines: its import and its mount"
    main.write_text(text)
    return root


def test_the_workload_is_named_once_in_main() -> None:
    main = (REPO / "app" / "main.py").read_text()
    assert len(WORKLOAD_LINES.findall(main)) == 2
    assert "app.workload" not in main.replace("from app.workload import BulkWorkload", "")
    frame = ["budget.py", "diagnostics.py", "config.py", "launch.py", "frame.py", "load.py"]
    frame += [f"edge/{path.name}" for path in (REPO / "app" / "edge").glob("*.py")]
    frame += [f"memory/{path.name}" for path in (REPO / "app" / "memory").glob("*.py")]
    for module in frame:
        source = (REPO / "app" / module).read_text()
        assert "app.workload" not in source, module
        assert "bulk" not in source.lower(), module


def test_the_verifier_and_the_load_tools_never_name_the_workload() -> None:
    """The verifier drives what the workloads declare (app/load.py, read through app.main): no
    module of scripts/ or loadtest/ imports the reference workload or names its routes."""
    for folder in ("scripts", "loadtest"):
        for path in (REPO / folder).rglob("*.py"):
            source = path.read_text()
            assert "app.workload" not in source, path
            assert "/bulk" not in source, path


def test_the_service_runs_without_the_workload(tmp_path: Path) -> None:
    root = without_workload(tmp_path / "fork")
    assert not (root / "app" / "workload").exists()
    port, token = free_port(), secrets.token_hex(16)
    environ = service_free_environ()
    environ.pop("PYTHONPATH", None)  # the copy's own `app`, never the repository's
    environ.update(
        HOST="127.0.0.1", PORT=str(port), ADMIN_TOKEN=token, MEMORY_PROFILE="glibc",
        ACCESS_LOG="0",
    )
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.launch"], cwd=root, env=environ, stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10.0) as client:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    pytest.fail(f"exited {process.returncode}:\n{log_path.read_text()}")
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert "memory_rss_bytes" in metrics.text and "bulk_cache" not in metrics.text
            status = client.get("/debug/memory", headers={"Authorization": f"Bearer {token}"})
            assert status.status_code == 200, status.text
            document = status.json()
            assert document["profile"] == "glibc" and document["rss_bytes"] > 0
            assert "cache" not in document  # the workload's section went with it
            assert not [p for p in client.get("/openapi.json").json()["paths"] if "bulk" in p]
            assert client.post("/bulk/sync", json={"records": []}).status_code == 404
    finally:
        process.terminate()
        process.wait(15)
    assert "Traceback" not in log_path.read_text()


def test_the_memory_packages_tests_pass_without_the_workload(tmp_path: Path) -> None:
    """The frame's own package, tested in the copy: nothing in it leans on the workload."""
    root = without_workload(tmp_path / "fork")
    # test_liftout.py reads the README; the attacks drive the servers with the verifier's tools
    ignore = shutil.ignore_patterns("__pycache__", "test_liftout.py", "test_liftout_attacks.py")
    shutil.copytree(REPO / "tests" / "memory", root / "tests" / "memory", ignore=ignore)
    shutil.copytree(REPO / "lab", root / "lab", ignore=ignore)  # CI's fetch of jemalloc builds
    if (REPO / ".cache").exists():  # ... and what it unpacked there
        (root / ".cache").symlink_to(REPO / ".cache")
    (root / "tests" / "__init__.py").write_text("")
    environ = service_free_environ()
    environ.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         "-m", "not slow", "tests/memory"],
        cwd=root, env=environ, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


def test_the_documented_workload_mounts_as_written(
    make_settings: Callable[..., Settings], tmp_path: Path, token: str
) -> None:
    """docs/lift-out.md's smallest workload, mounted beside nothing else: its route, its cost
    declaration and its section of /debug/memory."""
    text = (REPO / "docs" / "lift-out.md").read_text().split("## Fork", 1)[1]
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match
    (tmp_path / "notes_example.py").write_text(match.group(1))
    spec = importlib.util.spec_from_file_location("notes_example", tmp_path / "notes_example.py")
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    app = build_app(make_settings(admin_token=token), [example.Notes()])
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        assert client.post("/notes", content=b"hello").json() == {"notes": 1}
        assert client.post("/notes", content=b"x" * (2 * 1024 * 1024)).status_code == 413
        document = client.get("/debug/memory", headers=auth).json()
        assert document["notes"] == {"count": 1}
        assert "cache" not in document and "/bulk/sync" not in app.openapi()["paths"]
    assert [route.path for route in frame(app).admitted[0].routes] == ["/notes"]


def test_the_verifier_in_a_fork_without_the_workload_says_what_to_pass(tmp_path: Path) -> None:
    """`make verify` after deleting app/workload: one line, exit 2, naming --locustfile, and no
    server started (the users were the reference workload's, and went with it)."""
    root = without_workload(tmp_path / "fork")
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("scripts", "loadtest"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    environ = service_free_environ()
    environ.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "scripts.verify", "run", "--preset", "short",
         "--out", str(tmp_path / "out")],
        cwd=root, env=environ, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("verify: run not made: no workload"), line
    assert "declares its Locust users" in line
    assert "--locustfile FILE" in line
    assert not (tmp_path / "out").exists()  # nothing was started or written


def with_notes(root: Path) -> Path:
    """A fork: the tree without app/workload, with the notes workload of tests/app/fork mounted
    in its place (its import and its line in workloads(), as the README says), and what
    `make verify` needs beside app/: the Makefile, the verifier, the spike shape, the venv."""
    without_workload(root)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(__file__).parent / "fork" / "notes", root / "app" / "notes", ignore=ignore)
    main = root / "app" / "main.py"
    text = main.read_text()
    text = text.replace(
        "from app.profiles import load_profiles\n",
        "from app.notes import Notes\nfrom app.profiles import load_profiles\n",
    )
    text = text.replace("    return [\n    ]", "    return [\n        Notes(),\n    ]")
    assert "Notes()," in text and "from app.notes import Notes" in text
    main.write_text(text)
    for folder in ("scripts", "loadtest"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    for name in ("Makefile", "requirements.lock", "requirements-dev.lock"):
        shutil.copy2(REPO / name, root / name)
    (root / ".venv").symlink_to((REPO / ".venv").resolve())
    return root


@pytest.mark.slow
def test_a_fork_whose_workload_declares_its_users_verifies_with_no_flags(tmp_path: Path) -> None:
    """`make verify` in the fork: the notes workload's own users, found through app.main, driven
    under the spike shape; the run passes and records whose users it ran (about a minute)."""
    root = with_notes(tmp_path / "fork")
    environ = service_free_environ()
    environ.pop("PYTHONPATH", None)
    environ.pop("VERIFY_ARGS", None)
    # -o: the venv is shared and ready; make must never install into it from the copy.
    done = subprocess.run(
        ["make", "-o", ".venv/.dev", "-o", ".venv/.runtime", "verify"],
        cwd=root, env=environ, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS" in done.stdout
    (timeline,) = (root / "results").glob("*/*/timeline.json")
    meta = json.loads(timeline.read_text())["meta"]
    assert meta["locustfile"] == str(root / "app" / "notes" / "locustfile.py")
    (summary,) = (root / "results").glob("*/summary.md")
    assert "notes added and counted" in summary.read_text()
    stats = (timeline.parent / "locust_stats.csv").read_text()
    assert "/notes/count" in stats and "/bulk" not in stats
