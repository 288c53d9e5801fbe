"""Comparing profiles: baseline runs first, a profile that cannot run does not stop the others,
and only deployable profiles decide the exit code. Runs are replayed from recorded timelines."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.profiles import Profile, ProfileSet
from scripts.verify.core import compare
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.loadrun import LoadStats
from scripts.verify.core.run import RunResult, judge_timeline
from scripts.verify.core.timeline import read_json
from scripts.verify.core.verdict import Criteria

FIXTURES = Path(__file__).parent / "fixtures"


def replay(name: str, label: str) -> RunResult:
    timeline = read_json(FIXTURES / f"timeline_{name}.json")
    load = LoadStats.from_dict(timeline.extra["load"])
    results = judge_timeline(
        timeline, Criteria(), str(timeline.meta["metric"]), timeline.meta["idle_tail_seconds"], load
    )
    return RunResult(label, timeline, load, results)


PROFILES = ProfileSet(
    default="jemalloc",
    profiles={
        "glibc": Profile("glibc", "", "glibc"),
        "jemalloc": Profile("jemalloc", "", "jemalloc", preload="libjemalloc.so.2"),
        "baseline": Profile("baseline", "", "glibc", deploy=False),
    },
)


def test_baseline_runs_first_and_a_failing_baseline_does_not_fail_the_comparison() -> None:
    ran: list[str] = []

    def run(spec: compare.Run) -> RunResult:
        ran.append(spec.label)
        return replay("stays_high" if spec.label == "baseline" else "passes", spec.label)

    outcomes = compare.run_all(compare.plan(PROFILES, variants=()), run)
    assert ran == ["baseline", "glibc", "jemalloc"]
    assert not outcomes[0].result.passed  # type: ignore[union-attr]
    assert compare.exit_code(outcomes) == 0
    rows = compare.all_rows(outcomes)
    assert [r.label for r in rows] == ["baseline", "glibc", "jemalloc"]


def test_a_failing_deployable_profile_fails_the_comparison() -> None:
    outcomes = compare.run_all(
        compare.plan(PROFILES, variants=()),
        lambda spec: replay("stays_high" if spec.label == "glibc" else "passes", spec.label),
    )
    assert compare.exit_code(outcomes) == 1


def test_a_profile_that_cannot_run_is_recorded_and_the_rest_still_run() -> None:
    def run(spec: compare.Run) -> RunResult:
        if spec.label == "jemalloc":
            raise RunNotMade("libjemalloc.so.2 is not installed")
        return replay("passes", spec.label)

    outcomes = compare.run_all(compare.plan(PROFILES, variants=()), run)
    assert [o.profile for o in outcomes if o.result is not None] == ["baseline", "glibc"]
    assert compare.exit_code(outcomes) == 2
    not_made = compare.all_rows(outcomes)[-1]
    assert not_made.status == "NOT MADE" and "libjemalloc" in not_made.reasons[0]


def test_variants_follow_the_profiles_and_a_failing_one_does_not_fail_the_comparison() -> None:
    runs = compare.plan(PROFILES)
    assert [r.label for r in runs] == [
        "baseline",
        "glibc",
        "jemalloc",
        "baseline-recycle",
        "granian-max-rss",
    ]
    recycle, granian = runs[3:]
    assert (recycle.profile, recycle.web_concurrency) == ("baseline", 2)
    assert int(recycle.overrides["LIMIT_MAX_REQUESTS"]) > 0
    assert (granian.profile, granian.overrides["SERVER"]) == ("baseline", "granian")
    assert int(granian.overrides["WORKERS_MAX_RSS_MB"]) > 0
    outcomes = compare.run_all(
        runs,
        lambda spec: replay("passes" if spec.deploy else "stays_high", spec.label),
    )
    assert compare.exit_code(outcomes) == 0


def test_a_variant_of_a_profile_that_is_not_defined_is_left_out() -> None:
    only = ProfileSet(default="glibc", profiles={"glibc": Profile("glibc", "", "glibc")})
    assert [r.label for r in compare.plan(only)] == ["glibc"]


def test_every_variant_is_a_configuration_the_launcher_accepts() -> None:
    """A variant whose settings the service refuses would be a NOT MADE row in every bench."""
    from app.config import load_settings

    for variant in compare.VARIANTS:
        settings = {name.lower(): value for name, value in variant.overrides.items()}
        known = {k: v for k, v in settings.items() if not k.startswith("granian_")}
        loaded = load_settings(web_concurrency=variant.web_concurrency or 1, **known)
        assert loaded.web_concurrency == (variant.web_concurrency or 1)


def test_rows_can_be_picked_by_label_in_the_order_given() -> None:
    runs = compare.plan(PROFILES, only=["granian-max-rss", "glibc"])
    assert [r.label for r in runs] == ["granian-max-rss", "glibc"]
    with pytest.raises(RunNotMade, match="no such row: nope"):
        compare.plan(PROFILES, only=["glibc", "nope"])


def test_the_postgres_row_is_the_default_profile_with_a_database() -> None:
    default = ProfileSet(
        default="jemalloc-nopymalloc",
        profiles={"jemalloc-nopymalloc": Profile("jemalloc-nopymalloc", "", "jemalloc")},
    )
    (plain, postgres) = compare.plan(default)
    assert (plain.database, postgres.database) == (None, "postgres")
    assert postgres.profile == plain.profile == "jemalloc-nopymalloc"
    assert postgres.deploy
