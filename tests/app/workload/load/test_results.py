"""What a read-back answered 404 is reported as: lost inside the TTL, expired past it."""

from __future__ import annotations

import random

from app.workload.load.results import (
    CLOCK_MARGIN_SECONDS,
    EVICTED_NAME,
    EXPIRED_NAME,
    LOST_NAME,
    READ_NAME,
    READBACK_NAMES,
    KeptResults,
)


def test_a_404_inside_the_ttl_is_lost_and_past_it_expired() -> None:
    kept = KeptResults(keep=4, ttl_seconds=60.0)
    kept.add("young", now=100.0)
    kept.add("old", now=100.0)
    assert kept.gone("young", now=130.0) == LOST_NAME
    assert kept.gone("old", now=161.0) == EXPIRED_NAME
    assert len(kept) == 0  # both forgotten: never read back again


def test_a_404_within_the_clock_margin_of_the_ttl_is_not_counted_lost() -> None:
    kept = KeptResults(keep=4, ttl_seconds=10.0)
    kept.add("edge", now=0.0)
    kept.add("inside", now=0.0)
    assert kept.gone("edge", now=10.0 - CLOCK_MARGIN_SECONDS / 2) == EXPIRED_NAME
    assert kept.gone("inside", now=10.0 - CLOCK_MARGIN_SECONDS * 2) == LOST_NAME


def test_only_the_newest_ids_are_kept_and_picked() -> None:
    kept = KeptResults(keep=2, ttl_seconds=60.0)
    for n, name in enumerate(("a", "b", "c")):
        kept.add(name, now=float(n))
    rng = random.Random(1)
    assert {kept.pick(rng) for _ in range(50)} == {"b", "c"}


def test_the_names_are_distinct_and_share_the_read_backs_prefix() -> None:
    assert len(set(READBACK_NAMES)) == 4
    assert all(name.startswith(READ_NAME) for name in READBACK_NAMES)


def test_the_services_own_reason_wins_over_the_age() -> None:
    kept = KeptResults(keep=4, ttl_seconds=60.0)
    for name in ("evicted", "early", "unknown"):
        kept.add(name, now=0.0)
    # The service's details, as app/workload/routes.py words them.
    assert kept.gone("evicted", 5.0, "result evicted to keep the cache within") == EVICTED_NAME
    assert kept.gone("early", 5.0, "result expired: results are kept for") == EXPIRED_NAME
    assert kept.gone("unknown", 5.0, "no such result in this worker") == LOST_NAME


def test_the_words_matched_are_the_services_words() -> None:
    from app.workload.routes import GONE_DETAIL

    kept = KeptResults(keep=4, ttl_seconds=60.0)
    names = []
    for reason, detail in GONE_DETAIL.items():
        kept.add(str(reason), now=0.0)
        names.append(kept.gone(str(reason), 1.0, detail))
    assert names == [EXPIRED_NAME, LOST_NAME]  # stored results are never evicted
