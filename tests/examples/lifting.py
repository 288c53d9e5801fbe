"""What the examples' tests share: an example lifted into a scratch project as its reader lifts
it (its files, and app/memory copied in beside them as `memory`), and the verifier run on it the
way a user runs it, inside a real 500 MB memory cgroup where this machine allows one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.memory.cgroup import CGROUP_ROOT

REPO = Path(__file__).resolve().parents[2]
CGROUP_V1 = (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").exists() and os.geteuid() == 0
# The verifier's limit flags: a real cgroup of the verifier's default limit, where one can be made.
LIMIT = ["--limit-mode", "cgroup", "--limit-mb", "500"] if CGROUP_V1 else []
# Two rows keep a compare short enough for CI: the glibc yardstick and the default profile, or
# the default with its cleanup loop on and off (what the loop adds on top of the allocator).
COMPARED = ("baseline", "jemalloc-nopymalloc")
LOOP_ON_AND_OFF = ("jemalloc-nopymalloc", "jemalloc-nopymalloc-cleanup-off")


def lift(example: str, root: Path) -> Path:
    """The example's own modules and Locust users, with app/memory beside them, in ``root``."""
    for source in (REPO / "examples" / example).glob("*.py"):
        shutil.copy(source, root / source.name)
    shutil.copytree(
        REPO / "app" / "memory", root / "memory", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def serve_command(project: Path) -> str:
    return f"{sys.executable} -m uvicorn --app-dir {project} service:app --port {{port}}"


def verify(
    subcommand: str, project: Path, out: Path, *argv: str
) -> subprocess.CompletedProcess[str]:
    """`python -m scripts.verify SUBCOMMAND --preset short` on the lifted example, its own users,
    in the 500 MB cgroup; ADMIN_TOKEN left for the verifier to make."""
    env = {k: v for k, v in os.environ.items() if k != "ADMIN_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "scripts.verify", subcommand, "--preset", "short",
         "--command", serve_command(project), "--locustfile", str(project / "locustfile.py"),
         *LIMIT, "--no-plot", "--out", str(out), *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def verdict_rows(done: subprocess.CompletedProcess[str], out: Path) -> list[dict[str, Any]]:
    """The rows of a run that came to a verdict (exit 0 or 1; 2 is no run made), each with the
    figures the verdict stands on and the kernel's peak."""
    assert done.returncode in (0, 1), done.stdout + done.stderr
    rows: list[dict[str, Any]] = json.loads((out / "summary.json").read_text())["rows"]
    for row in rows:
        assert row["status"] in ("PASS", "FAIL"), row
        for figure in ("start_mb", "load_mb", "idle_mb", "rss_peak_mb"):
            assert isinstance(row[figure], float), (figure, row)
        # The share given back, unless the load raised memory too little for a share to mean
        # anything (docs/verify.md, Verdict).
        assert row["returned"] is not None or row["load_mb"] - row["start_mb"] < 16, row
        if CGROUP_V1:
            assert isinstance(row["cgroup_peak_mb"], float), row
    return rows


def meta_of(folder: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((folder / "timeline.json").read_text())["meta"]
    return meta


def assert_compared(
    done: subprocess.CompletedProcess[str], out: Path, compared: tuple[str, ...] = COMPARED
) -> list[dict[str, Any]]:
    """A compare of ``compared``, two rounds in turn, each row under its own profile's allocator
    and with its own cleanup setting (the baseline profile's MEMORY_CLEANUP=0, or the row's),
    ending with the recommendation."""
    rows = verdict_rows(done, out)
    labels = [row["label"] for row in rows]
    assert labels == [f"{name} #{n}" for n in (1, 2) for name in compared]
    for label in labels:
        meta = meta_of(out / label.replace(" #", "-"))
        allocator = meta["service_at_start"]["allocator"]
        assert allocator == ("glibc" if label.startswith("baseline") else "jemalloc"), label
        loop_off = label.startswith("baseline") or "-cleanup-off" in label
        assert meta["service_at_start"]["cleanup"]["enabled"] is not loop_off, label
    assert done.stdout.strip().splitlines()[-1].startswith("recommendation: ")
    return rows
