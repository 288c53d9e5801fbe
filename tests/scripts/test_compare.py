"""Comparing profiles: baseline runs first, a profile that cannot run does not stop the others,
and only deployable profiles decide the exit code. Runs are replayed from recorded timelines."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.memory.measure import MB
from app.profiles import Profile, ProfileSet
from scripts.verify.core import compare
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.loadrun import LoadStats
from scripts.verify.core.run import RunResult, SeriesResult, judge_timeline
from scripts.verify.core.timeline import Timeline, read_json
from scripts.verify.core.verdict import Criteria, Figures, Verdict

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
        "jemalloc-cleanup-off",  # PROFILES' default with its cleanup loop off
        "baseline-recycle",
        "granian-max-rss",
    ]
    off, recycle, granian = runs[3:]
    assert (off.profile, dict(off.overrides), off.deploy) == (
        "jemalloc", {"MEMORY_CLEANUP": "0"}, False,
    )  # fmt: skip
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
    assert [r.label for r in compare.plan(only)] == ["glibc", "glibc-cleanup-off"]


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
    (plain, _cleanup_off, postgres) = compare.plan(default)
    assert (plain.database, postgres.database) == (None, "postgres")
    assert postgres.profile == plain.profile == "jemalloc-nopymalloc"
    assert postgres.deploy


# compare --command: the profiles on the user's own service.


def test_on_a_command_each_profile_runs_in_rounds_a_b_a_b() -> None:
    runs = compare.own_plan(PROFILES, rounds=2)
    assert [r.label for r in runs] == [
        "baseline #1", "glibc #1", "jemalloc #1", "jemalloc-cleanup-off #1",
        "baseline #2", "glibc #2", "jemalloc #2", "jemalloc-cleanup-off #2",
    ]
    assert [r.profile for r in runs[:4]] == ["baseline", "glibc", "jemalloc", "jemalloc"]
    assert runs[3].overrides == {"MEMORY_CLEANUP": "0"} and not runs[3].deploy
    assert compare.folder_of("jemalloc #2") == "jemalloc-2"


def test_a_profile_is_its_variables_alone_for_a_command() -> None:
    baseline = Profile(
        "baseline", "", "glibc", env={"MEMORY_CLEANUP": "0", "MEMORY_ADMISSION": "0"}
    )
    env = compare.allocator_environment(baseline)
    assert env["LD_PRELOAD"] == "" and env["MALLOC_CONF"] == "" and env["PYTHONMALLOC"] == ""
    assert env["MEMORY_CLEANUP"] == "0" and env["MEMORY_PROFILE"] == "baseline"
    missing = Profile("ghost", "", "jemalloc", preload="libno-such-allocator.so.9")
    with pytest.raises(RunNotMade, match="libno-such-allocator.so.9 is not installed"):
        compare.allocator_environment(missing)


def judged(
    label: str, passed: bool, rss_peak_mb: float, profile: str | None = None, deploy: bool = True
) -> compare.Outcome:
    figures = Figures(
        metric="pss", start_bytes=50 * MB, peak_bytes=200 * MB, peak_t=10.0, idle_bytes=60 * MB,
        returned=0.9, seconds_to_return=3.0, idle_window_seconds=20.0, samples=50,
        load_level_bytes=150 * MB, rss_peak_bytes=int(rss_peak_mb * MB),
    )  # fmt: skip
    result = RunResult(label, Timeline({}, [], []), None, [
        SeriesResult("server", figures, Verdict(passed, [] if passed else ["kept it"]))
    ])  # fmt: skip
    allocator = profile or label.split(" #")[0]
    return compare.Outcome(label, deploy, result, allocator_profile=allocator)


def test_the_recommendation_is_the_lowest_peak_among_profiles_passing_every_round() -> None:
    outcomes = [
        judged("baseline #1", False, 100), judged("glibc #1", True, 300),
        judged("jemalloc #1", True, 260), judged("baseline #2", False, 100),
        judged("glibc #2", True, 310), judged("jemalloc #2", False, 250),
    ]  # fmt: skip
    line = compare.recommendation(outcomes, PROFILES, rounds=2)
    # jemalloc failed a round and baseline is never deployed: glibc, though its peak is higher.
    assert line.startswith("recommendation: glibc, the lowest peak RSS (305.0 MB"), line
    assert "within the rounds' spread" not in line
    none = [judged(f"glibc #{n}", False, 300) for n in (1, 2)]
    assert "no profile passed in every round" in compare.recommendation(none, PROFILES, 2)


def test_the_default_with_its_loop_off_is_not_a_round_of_the_default() -> None:
    """The cleanup-off row runs the default profile's allocator; its failures are the loop's
    absence, not the profile's."""
    off = "jemalloc-cleanup-off"
    outcomes = [
        judged("jemalloc #1", True, 260), judged(f"{off} #1", False, 270, "jemalloc", False),
        judged("jemalloc #2", True, 262), judged(f"{off} #2", False, 268, "jemalloc", False),
    ]  # fmt: skip
    line = compare.recommendation(outcomes, PROFILES, rounds=2)
    assert line.startswith("recommendation: jemalloc, the lowest peak RSS (261.0 MB"), line


def test_this_services_rows_run_in_rounds_with_their_settings_kept() -> None:
    runs = compare.in_rounds(compare.plan(PROFILES, only=["glibc", "baseline-recycle"]), 2)
    assert [r.label for r in runs] == [
        "glibc #1", "baseline-recycle #1", "glibc #2", "baseline-recycle #2",
    ]  # fmt: skip
    assert runs[3].web_concurrency == 2 and runs[3].overrides == runs[1].overrides
    assert compare.in_rounds(runs[:2], 1) == runs[:2]


def test_a_profile_whose_peak_the_spread_covers_is_named_beside_the_recommendation() -> None:
    outcomes = [
        judged("glibc #1", True, 260), judged("jemalloc #1", True, 296),
        judged("glibc #2", True, 300), judged("jemalloc #2", True, 297),
    ]  # fmt: skip
    line = compare.recommendation(outcomes, PROFILES, rounds=2)
    assert line.startswith("recommendation: glibc, the lowest peak RSS (280.0 MB"), line
    assert line.endswith("; within the rounds' spread of it: jemalloc"), line
