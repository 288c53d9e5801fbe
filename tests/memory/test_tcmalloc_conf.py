"""tcmalloc's settings against the environment: which TCMALLOC_* values did not take."""

from __future__ import annotations

import pytest

from app.memory.tcmalloc_conf import UNREADABLE, not_applied_line


@pytest.mark.parametrize(
    ("asked", "shown", "took"),
    [
        ("true", "1", True),
        ("yes", "1", True),
        ("", "1", True),  # gperftools reads an empty value as true
        ("false", "0", True),
        ("perhaps", "0", True),  # first letter not t, y or 1: false, as tcmalloc read it
        ("true", "0", False),
    ],
)
def test_aggressive_decommit_is_compared_as_gperftools_reads_it(
    asked: str, shown: str, took: bool
) -> None:
    line = not_applied_line(
        {"TCMALLOC_AGGRESSIVE_DECOMMIT": shown}, {"TCMALLOC_AGGRESSIVE_DECOMMIT": asked}
    )
    assert (line is None) is took
    if not took:
        assert line is not None and "\n" not in line
        assert f"TCMALLOC_AGGRESSIVE_DECOMMIT={asked!r} (in effect: {shown})" in line


def test_release_rate_is_compared_as_a_number_where_tcmalloc_reports_it() -> None:
    asked = {"TCMALLOC_RELEASE_RATE": "10.0"}
    assert not_applied_line({"TCMALLOC_RELEASE_RATE": "10"}, asked) is None
    line = not_applied_line({"TCMALLOC_RELEASE_RATE": "1"}, {"TCMALLOC_RELEASE_RATE": "fast"})
    assert line is not None and "TCMALLOC_RELEASE_RATE='fast' (in effect: 1)" in line
    unread = {"TCMALLOC_RELEASE_RATE": f"fast {UNREADABLE}"}
    assert not_applied_line(unread, {"TCMALLOC_RELEASE_RATE": "fast"}) is None


def test_variables_not_set_are_not_compared() -> None:
    assert not_applied_line({"TCMALLOC_HEAP_LIMIT_MB": "0"}, {}) is None
