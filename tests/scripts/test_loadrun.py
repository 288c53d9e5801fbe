"""Locust's command line and its CSV statistics (a file recorded from a real short run), for the
users the reference workload declares and for a user's own locustfile."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.load import LocustUsers
from loadtest.spike import SpikePlan
from scripts.verify.core.declared import SHAPE_FILE, users_for
from scripts.verify.core.errors import RunNotMade
from scripts.verify.core.loadrun import (
    UNREACHABLE_SECONDS,
    LoadStats,
    check_delivered,
    locust_argv,
    read_stats,
    unreachable,
)
from scripts.verify.core.run import cache_ttl

FIXTURES = Path(__file__).parent / "fixtures"
DECLARED = users_for(None)  # the reference workload's users, as the verifier reads them


def test_recorded_stats_give_the_aggregate_and_the_bulk_submits() -> None:
    stats = read_stats(FIXTURES / "locust_stats.csv", DECLARED)
    assert stats.requests > stats.bulk_submits > 0
    assert stats.failures == 0 and stats.failure_share == 0.0
    assert stats.requests_per_second > 0
    assert stats.p50_ms is not None and stats.p99_ms is not None and stats.p50_ms <= stats.p99_ms
    assert LoadStats.from_dict(stats.as_dict()) == stats


def test_read_backs_lost_inside_their_ttl_are_counted_apart() -> None:
    # Recorded from a real short run of two uvicorn workers restarted every 150-250 requests:
    # a read-back can reach the worker that never had the result, or one started since.
    stats = read_stats(FIXTURES / "locust_stats_recycled.csv", DECLARED)
    # Found 73, evicted 2, expired 29, lost 69: only the last is state dropped.
    assert (stats.readbacks, stats.readbacks_lost) == (173, 69)
    assert stats.lost_share == 69 / 173
    assert stats.failures == 0  # a 404 read-back is not a failed request
    assert LoadStats.from_dict(stats.as_dict()) == stats
    older = read_stats(FIXTURES / "locust_stats.csv", DECLARED)  # before lost had a name
    assert older.readbacks > 0 and older.readbacks_lost == 0 and older.lost_share == 0.0


def test_users_that_name_nothing_have_nothing_counted_by_name() -> None:
    """A --locustfile's users declare no names: the same statistics count no heavy request and
    no read-back, whatever their requests are called."""
    stats = read_stats(FIXTURES / "locust_stats_recycled.csv", LocustUsers(Path("mine.py")))
    assert (stats.bulk_submits, stats.readbacks, stats.readbacks_lost) == (0, 0, 0)
    assert stats.requests == read_stats(FIXTURES / "locust_stats_recycled.csv").requests > 0


def test_missing_statistics_mean_the_run_was_not_made(tmp_path: Path) -> None:
    with pytest.raises(RunNotMade):
        read_stats(tmp_path / "locust_stats.csv")
    (tmp_path / "empty.csv").write_text("Type,Name,Request Count,Failure Count\n")
    with pytest.raises(RunNotMade, match="Aggregated"):
        read_stats(tmp_path / "empty.csv")


def test_a_spike_whose_submits_all_failed_was_not_delivered() -> None:
    failed = LoadStats(40, 20, 2.0, 5.0, 9.0, bulk_submits=20, bulk_failures=20)
    with pytest.raises(RunNotMade, match="not delivered"):
        check_delivered(failed, DECLARED)
    check_delivered(LoadStats(40, 1, 2.0, 5.0, 9.0, bulk_submits=20, bulk_failures=1), DECLARED)


def test_a_users_scenario_needs_a_request_through_not_a_bulk_submit(tmp_path: Path) -> None:
    own = LocustUsers(Path("mine.py"))
    check_delivered(LoadStats(40, 1, 2.0, 5.0, 9.0, bulk_submits=0, bulk_failures=0), own)
    failures = tmp_path / "locust_failures.csv"
    failures.write_text(FAILURES_CSV)
    with pytest.raises(RunNotMade, match=r"no request succeeded \(40 sent.*GET /items/\[id\]"):
        check_delivered(LoadStats(40, 40, 2.0, 5.0, 9.0, 0, 0), own, failures_csv=failures)


FAILURES_CSV = """Method,Name,Error,Occurrences
GET,/healthz,"ConnectionRefusedError(111, 'Connection refused')",4
GET,/items/[id],"HTTPError('404 Client Error: Not Found for url: /items/3')",36
"""
STATS_CSV = """Type,Name,Request Count,Failure Count,Requests/s,50%,99%
GET,/items/[id],{n},{failed},4.0,3,9
,Aggregated,{n},{failed},4.0,3,9
"""


def test_a_scenario_that_cannot_reach_the_service_is_named_within_seconds(
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "locust"
    assert unreachable(prefix, 10.0) is None  # no statistics written yet
    Path(f"{prefix}_stats.csv").write_text(STATS_CSV.format(n=40, failed=40))
    Path(f"{prefix}_failures.csv").write_text(FAILURES_CSV)
    assert unreachable(prefix, UNREACHABLE_SECONDS - 1) is None  # too early to tell
    why = unreachable(prefix, UNREACHABLE_SECONDS + 1)
    assert why is not None and "every request failed" in why and "(40 sent)" in why
    assert why.index("/items/[id]") < why.index("/healthz")  # the most frequent first
    Path(f"{prefix}_stats.csv").write_text(STATS_CSV.format(n=40, failed=39))
    assert unreachable(prefix, 30.0) is None  # one got through: the run goes on


def test_a_users_locustfile_runs_under_the_spike_shape_without_our_traffic_options(
    tmp_path: Path,
) -> None:
    own = tmp_path / "mine.py"
    own.write_text("")
    plan = SpikePlan(users=4, ramp_seconds=2, hold_seconds=9, idle_seconds=30)
    argv = locust_argv("http://127.0.0.1:9", plan, tmp_path / "l", users_for(own), (), 10.0)
    assert argv[argv.index("-f") + 1] == f"{own},{SHAPE_FILE}"
    assert argv[argv.index("--spike-users") + 1] == "4"
    assert not {"--think-time", "--bulk-sizes", "--cache-ttl"} & set(argv)


def test_the_declared_users_run_under_the_same_shape_with_their_own_options(
    tmp_path: Path,
) -> None:
    plan = SpikePlan(users=4, ramp_seconds=2, hold_seconds=9, idle_seconds=30)
    argv = locust_argv(
        "http://127.0.0.1:9", plan, tmp_path / "locust", DECLARED, DECLARED.spike_options
    )
    assert argv[argv.index("-f") + 1] == f"{DECLARED.file},{SHAPE_FILE}"
    assert "loadtest" not in str(DECLARED.file)  # the users moved with their workload
    options = dict(zip(argv[3::1], argv[4::1], strict=False))
    assert options["--spike-users"] == "4"
    assert options["--spike-hold"] == "9"
    assert options["--spike-idle"] == "0"
    assert options["--think-time"] == "0.1,0.5"
    assert options["--bulk-sizes"] == "200:40,1000:25,5000:20,20000:15"
    assert "--headless" in argv
    assert "--cache-ttl" not in argv  # unknown: Locust assumes the service's default


def test_locust_is_told_the_services_own_ttl(tmp_path: Path) -> None:
    plan = SpikePlan(users=4, ramp_seconds=2, hold_seconds=9, idle_seconds=30)
    argv = locust_argv("http://127.0.0.1:9", plan, tmp_path / "l", DECLARED, (), 10.0)
    assert argv[argv.index("--cache-ttl") + 1] == "10"
    assert cache_ttl({"service_at_start": {"cache": {"ttl_seconds": 10.0}}}) == 10.0
    assert cache_ttl({"service_at_start": {"cache": {"entries": 0}}}) is None  # an older service
    assert cache_ttl({"service_at_start": None}) is None
