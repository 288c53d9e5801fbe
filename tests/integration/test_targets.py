"""The service's measured targets, checked the way they are measured: a real server started by the
launcher on this machine, real load, figures compared within one run.

- A release never stalls the event loop: the p99 of /healthz while releases run stays within
  5 ms of the p99 with none (`python -m scripts.stall`, the default profile, no contrast run).
- Idle memory goes back near where it started: the default profile's idle PSS after the
  verifier's short spike is within 1.5x of its PSS before it, and stays there from shortly
  after the results cached during the spike expire.

Both figures are noisy on a shared 2-core machine; each margin below is the spread measured over
repeated runs here (lab/stall/README.md lists them), not a guess.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.launch import library_available
from app.profiles import load_profiles
from lab.stall import figures as sf
from lab.stall.run import StallSettings, run_profile
from scripts.verify.core.loadrun import locust_available
from scripts.verify.core.modes import run_local
from scripts.verify.core.presets import PRESETS
from scripts.verify.core.run import RunResult, RunSettings
from scripts.verify.core.verdict import IDLE_TARGET_RATIO, Criteria, Figures

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not library_available("libjemalloc.so.2"), reason="the default profile needs libjemalloc2"
    ),
]

DEFAULT = load_profiles().default

# Five A/A runs (the same blocks, no release in either condition) moved the p99 by -3.0 to
# +0.3 ms; releases that keep the GIL free moved it by -3.0 to +1.7 ms over eight runs (+0.8 ms
# for the default profile once its objects are frozen after startup); releases that hold it, by
# +27 ms and more. 10 ms is three times the noise and well below a real stall.
STALL_MARGIN_MS = 10.0

# idle/start of the default profile over six short runs: 1.01, 1.15, 1.19, 1.20, 1.21, 1.24.
# The check is the target itself: the worst run is 0.26 under it, more than the 0.23 spread.
IDLE_TARGET = IDLE_TARGET_RATIO


def test_a_release_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    result = run_profile(DEFAULT, StallSettings(inline=False), tmp_path)
    verdict = sf.judge(result, sf.TARGET_MS + STALL_MARGIN_MS)
    quiet, off_loop = result.quiet, result.off_loop
    assert off_loop.releases.count > 0
    assert verdict.passed, (
        f"p99 {quiet.latency.p99_ms:.1f} ms with no release, {off_loop.latency.p99_ms:.1f} ms "
        f"with {off_loop.releases.count} releases of median {off_loop.releases.median_ms:.1f} "
        f"ms: {verdict.reasons}"
    )


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """One verifier run, short preset, default profile; both idle checks read it."""
    if not locust_available():
        pytest.skip("Locust is not installed")
    out = tmp_path_factory.mktemp("verify") / DEFAULT
    settings = RunSettings(
        label=DEFAULT, preset=PRESETS["short"], criteria=Criteria(), metric="pss", out_dir=out
    )
    return run_local(DEFAULT, settings)


def figures_of(run: RunResult) -> Figures:
    (series,) = run.results
    assert series.figures is not None, series.verdict.reasons
    return series.figures


def describe(figures: Figures) -> str:
    return (
        f"idle PSS {figures.idle_bytes / sf.MB:.1f} MB is {figures.idle_ratio:.2f}x the start "
        f"({figures.start_bytes / sf.MB:.1f} MB; peak {figures.peak_bytes / sf.MB:.1f} MB), "
        f"under {IDLE_TARGET:g}x for good {figures.seconds_to_target} s after the load"
    )


def test_idle_pss_is_within_the_target_of_its_start(short_run: RunResult) -> None:
    figures = figures_of(short_run)
    assert figures.idle_ratio is not None and figures.idle_ratio <= IDLE_TARGET, describe(figures)


def test_idle_pss_gets_there_once_the_cache_has_let_go(short_run: RunResult) -> None:
    """Results cached during the spike are live data the service promised for CACHE_TTL_SECONDS;
    they go at the first cleanup pass after they expire. Within 5 s of that is the target (the
    six runs above: 12-13 s, against 20 s allowed)."""
    preset = PRESETS["short"]
    allowed = preset.cache_ttl_seconds + preset.cleanup_interval_seconds + 5
    figures = figures_of(short_run)
    assert figures.seconds_to_target is not None, describe(figures)
    assert figures.seconds_to_target <= allowed, describe(figures)
