"""The verifier for real: the service on a free port, a real Locust process, the short preset.

About a minute each; `make test-fast` leaves them out.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.launch import library_available
from app.memory.cgroup import CGROUP_ROOT
from app.profiles import load_profiles
from scripts.verify.core.declared import users_for
from scripts.verify.core.kernel_peak import KernelPeak, recorded_peak
from scripts.verify.core.loadrun import locust_available, read_stats
from scripts.verify.core.sampling import exited_during
from scripts.verify.core.timeline import read_json

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT = load_profiles().default
needs_v1_root = pytest.mark.skipif(
    os.geteuid() != 0 or not (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").exists(),
    reason="needs root and the cgroup v1 memory controller",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not library_available("libjemalloc.so.2"), reason="the default profile needs libjemalloc2"
    ),
    pytest.mark.skipif(not locust_available(), reason="Locust is not installed"),
]


def verify(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.verify", "run", "--preset", "short", "--out", str(out)]
        + list(extra),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_outputs(run_dir: Path, out: Path, profile: str) -> None:
    timeline = read_json(run_dir / "timeline.json")
    assert [p.name for p in timeline.phases] == ["warmup", "baseline", "ramp", "hold", "idle"]
    assert read_stats(run_dir / "warmup_stats.csv").requests > 0  # the warm-up sent its user
    assert len(timeline.samples) >= 30  # a minute of one-second samples, give or take
    assert timeline.meta["profile"] == profile
    assert timeline.meta["service_at_end"]["profile"] == profile
    with (run_dir / "timeline.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(timeline.samples)
    assert (run_dir / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = read_stats(run_dir / "locust_stats.csv", users_for(None))
    assert stats.bulk_submits > 0 and stats.readbacks > 0
    assert timeline.meta["service_at_start"]["cache"]["ttl_seconds"] == 10  # the short preset's
    assert f"| {profile} |" in (out / "summary.md").read_text()
    # The kernel's marks of each phase, reset at its start: the load's peak RSS is the server's
    # own high-water mark, at least what any one-second sample of its RSS saw.
    marks = timeline.extra["kernel_peaks"]
    peaks = {name: KernelPeak.from_dict(raw) for name, raw in marks.items()}
    assert set(peaks) == {"warmup", "baseline", "load", "idle"}
    assert all(p.since_reset and p.rss_bytes for p in peaks.values()), peaks
    highest = recorded_peak(timeline.extra)
    assert highest is not None
    sampled = max(s.rss_bytes or 0 for s in timeline.samples if s.t >= timeline.phases[2].start)
    assert (highest.rss_bytes or 0) >= 0.9 * sampled  # RSS read a moment apart
    assert "RSS peak MB" in (out / "summary.md").read_text()


def test_short_run_of_the_default_profile_passes(tmp_path: Path) -> None:
    done = verify(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout
    check_outputs(tmp_path / DEFAULT, tmp_path, DEFAULT)
    assert exited_during(read_json(tmp_path / DEFAULT / "timeline.json").samples) == 0


def test_workers_restarted_during_a_run_are_counted_and_take_no_result_with_them(
    tmp_path: Path,
) -> None:
    """Restarts are counted; since results are kept in the database, a recycled worker loses
    none of them (before, this run lost 40% of its read-backs)."""
    # Two workers, each restarted every 40-60 requests: several restarts in the short spike.
    done = verify(
        tmp_path,
        "--profile", "baseline", "--web-concurrency", "2", "--no-plot",
        "--set", "LIMIT_MAX_REQUESTS=40", "--set", "LIMIT_MAX_REQUESTS_JITTER=20",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr  # baseline may keep its spike
    timeline = read_json(tmp_path / "baseline" / "timeline.json")
    restarts = exited_during(timeline.samples)
    assert restarts is not None and restarts >= 2
    stats = read_stats(tmp_path / "baseline" / "locust_stats.csv", users_for(None))
    assert stats.readbacks > 0 and stats.readbacks_lost == 0
    table = [t for t in (tmp_path / "summary.md").read_text().splitlines() if t.startswith("|")]
    header, _, line = table
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[names.index("restarts")] == str(restarts)
    assert cells[names.index("results lost")] == f"{stats.lost_share:.0%}"


@needs_v1_root
def test_short_run_inside_a_real_500_mb_cgroup_passes(tmp_path: Path) -> None:
    done = verify(tmp_path, "--limit-mode", "cgroup", "--limit-mb", "500")
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = tmp_path / DEFAULT
    check_outputs(run_dir, tmp_path, DEFAULT)
    timeline = read_json(run_dir / "timeline.json")
    assert timeline.meta["service_at_start"]["cgroup_limit_bytes"] == 500 * 1024 * 1024
    assert all(s.cgroup_usage_bytes for s in timeline.samples)
    assert timeline.meta["cgroup"]["oom_kills"] == 0
    highest = recorded_peak(timeline.extra)
    after = [s for s in timeline.samples if s.t >= timeline.phases[2].start]
    assert highest is not None
    assert (highest.cgroup_bytes or 0) >= max(s.cgroup_usage_bytes or 0 for s in after)
    assert "cgroup peak MB" in (tmp_path / "summary.md").read_text()


@needs_v1_root
def test_a_server_oom_killed_in_a_tight_cgroup_fails_with_the_reason(tmp_path: Path) -> None:
    # Admission off: with it on, the service refuses what 150 MB cannot hold instead of dying
    # (a MAX_BODY_MB body does not even fit that budget, and startup says so).
    done = verify(
        tmp_path,
        "--limit-mode", "cgroup", "--limit-mb", "150", "--no-plot", "--set", "MEMORY_ADMISSION=0",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "OOM-killed in the 150 MB cgroup" in done.stdout
    timeline = read_json(tmp_path / DEFAULT / "timeline.json")
    assert timeline.meta["cgroup"]["oom_kills"] >= 1
