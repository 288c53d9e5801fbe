"""The split of what a process holds, read in real processes under the allocator setups the
profiles use: glibc with pymalloc, jemalloc preloaded without it, and tracemalloc turned on.

Each child builds a known state (small objects freed but pinned, objects kept alive, a traced
line) and prints its split as JSON; the figures must show that state, or the test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from app.memory import holdings
from app.memory.holdings import (
    ALLOCATOR_FREE,
    CPYTHON_MIMALLOC,
    FILE,
    LIVE,
    Holdings,
    PymallocUsage,
    help_line,
    largest,
    malloc_figures,
    object_allocator,
    parse_mimalloc_stats,
    parse_proc_status,
    parse_pymalloc_stats,
    reach_line,
)
from app.memory.measure import MB, HeapUsage
from tests.memory.conftest import FIXTURES

READ = """
from app.memory.allocator import detect_allocator
from app.memory.holdings import read_holdings, help_line
import json, sys
allocator = detect_allocator()
def split():
    h = read_holdings(allocator.heap_usage)
    return {**h.as_dict(), "advice": help_line(h, allocator.name), "allocator": allocator.name}
"""
# 400,000 small strings, every other one freed: the survivors pin nearly every pymalloc pool.
PINNED = """
before = split()
kept = [str(i) * 3 for i in range(400_000)]
del kept[::2]
print(json.dumps({"before": before, "after": split()}))
"""
LIVE_GROWTH = """
before = split()
kept = [[i, f"item-{i}"] for i in range(200_000)]  # lists: gc tracks every one
print(json.dumps({"before": before, "after": split()}))
"""


def run_child(body: str, **env: str) -> dict[str, dict[str, object]]:
    code = textwrap.dedent(READ) + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    figures: dict[str, dict[str, object]] = json.loads(result.stdout)
    return figures


def grew(figures: dict[str, dict[str, object]], key: str) -> int:
    after, before = figures["after"][key], figures["before"][key]
    assert isinstance(after, int) and isinstance(before, int), (key, figures)
    return after - before


def test_pinned_small_objects_show_as_free_memory_inside_pymalloc() -> None:
    figures = run_child(PINNED, PYTHONMALLOC="pymalloc")
    after = figures["after"]
    assert after["allocator"] == "glibc"
    # Half the strings are gone, but their pools are pinned by the other half: free inside.
    assert grew(figures, "pymalloc_free_bytes") > 8 * MB, figures
    assert grew(figures, "live_objects_bytes") > 8 * MB, figures
    assert "pymalloc arenas that live small objects pin" in str(after["advice"])


def test_jemalloc_without_pymalloc_is_read_from_jemalloc(jemalloc: str) -> None:
    figures = run_child(LIVE_GROWTH, LD_PRELOAD=jemalloc, PYTHONMALLOC="malloc")
    after = figures["after"]
    assert after["allocator"] == "jemalloc"
    assert after["pymalloc_arenas_bytes"] is None  # pymalloc is not the object allocator
    # 200,000 lists with a string each: tens of MB in jemalloc's blocks in use.
    assert grew(figures, "malloc_in_use_bytes") > 20 * MB, figures
    assert grew(figures, "gc_objects") >= 190_000  # less what the first read left behind


def test_live_objects_grow_by_what_is_kept_under_glibc() -> None:
    figures = run_child(LIVE_GROWTH, PYTHONMALLOC="pymalloc")
    assert grew(figures, "live_objects_bytes") > 20 * MB, figures
    assert grew(figures, "gc_objects") >= 190_000  # less what the first read left behind
    assert figures["after"]["traced_bytes"] is None  # tracing is never turned on for the split


def test_tracemalloc_names_the_line_that_holds_the_most() -> None:
    body = """
    import tracemalloc
    tracemalloc.start()
    kept = [bytes(1000) for _ in range(20_000)]  # the line
    print(json.dumps({"before": {}, "after": split()}))
    """
    after = run_child(body)["after"]
    top = after["top_sites"]
    assert isinstance(top, list) and top, after
    assert top[0]["where"] == "<string>:12" and top[0]["size_bytes"] >= 20 * 1000 * 1000
    assert isinstance(after["traced_bytes"], int) and after["traced_bytes"] >= 20_000_000


def test_pymalloc_report_is_read_only_where_pymalloc_allocates() -> None:
    code = "from app.memory.holdings import read_pymalloc; print(read_pymalloc())"
    plain = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONMALLOC": "malloc"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert plain.stdout.strip() == "None" and plain.stderr == ""  # nothing written to stderr
    here = holdings.read_pymalloc()
    if here is None:
        pytest.skip("this interpreter does not allocate objects with pymalloc")
    assert 0 < here.allocated_bytes <= here.arenas_bytes


def test_pymalloc_report_parsing() -> None:
    report = """
    # arenas allocated current         =                   23
    23 arenas * 1048576 bytes/arena    =           24,117,248

    # bytes in allocated blocks        =           13,231,600
    # bytes in available blocks        =            9,897,344
    """
    usage = parse_pymalloc_stats(textwrap.dedent(report))
    assert usage == PymallocUsage(24_117_248, 13_231_600)
    assert usage.free_bytes == 24_117_248 - 13_231_600
    assert parse_pymalloc_stats("mimalloc: heap stats\n") is None


def test_proc_status_parsing() -> None:
    text = "VmRSS:\t 2032 kB\nRssAnon:\t 148 kB\nRssFile:\t 1884 kB\nRssShmem:\t 4 kB\n"
    assert parse_proc_status(text) == (148 * 1024, 1888 * 1024)
    assert parse_proc_status("Name:\tx\n") == (None, None)


def test_malloc_figures_per_allocator() -> None:
    jemalloc = HeapUsage("jemalloc", {"allocated_bytes": 30 * MB, "resident_bytes": 42 * MB})
    assert malloc_figures(jemalloc, 100 * MB, None) == (30 * MB, 12 * MB)
    glibc = HeapUsage("glibc", {"heap_used_bytes": 20 * MB, "mmap_used_bytes": 5 * MB})
    pymalloc = PymallocUsage(40 * MB, 30 * MB)
    # glibc keeps what is anonymous but neither pymalloc's arenas nor its own blocks in use.
    assert malloc_figures(glibc, 100 * MB, pymalloc) == (25 * MB, 35 * MB)
    assert malloc_figures(glibc, None, pymalloc) == (25 * MB, None)
    assert malloc_figures(None, 100 * MB, pymalloc) == (None, None)


def split(live: int, free: int, file_pages: int) -> Holdings:
    return Holdings(None, file_pages, None, live, free, 0, None)


def test_largest_part_and_the_line_for_it() -> None:
    assert largest(split(10, 50, 5).parts()) == ALLOCATOR_FREE
    assert largest(split(90, 50, 5).parts()) == LIVE
    assert largest(split(1, 2, 5).parts()) == FILE
    assert largest({LIVE: None, ALLOCATOR_FREE: None, FILE: None}) is None
    glibc = help_line(split(10 * MB, 50 * MB, 0), "glibc")
    assert "50.0 MB free inside the allocators" in glibc and "jemalloc preloaded" in glibc


def test_each_setup_says_what_it_can_give_back() -> None:
    lines = {
        reach_line("glibc", True),
        reach_line("glibc", False),
        reach_line("jemalloc", True),
        reach_line("jemalloc", False),
        reach_line("tcmalloc", False),
        reach_line("tcmalloc", True),
        reach_line("glibc", True, free_threaded=True),
        reach_line("glibc", False, cpython_mimalloc=True),
    }
    assert len(lines) == 8  # one line per setup, none shared
    assert "CPython exports no call" in reach_line("jemalloc", False, cpython_mimalloc=True)
    assert "PYTHONMALLOC=malloc" in reach_line("glibc", True)


def test_objects_frozen_by_gc_freeze_still_count() -> None:
    body = """
    import gc
    kept = [[i] for i in range(50_000)]
    before = split()
    gc.freeze()  # as a service does after start-up: out of get_objects()'s view, still live
    after = split()
    gc.unfreeze()
    print(json.dumps({"before": before, "after": after}))
    """
    figures = run_child(body)
    assert abs(grew(figures, "gc_objects")) < 1_000, figures


def test_cpython_mimalloc_report_parsing() -> None:
    """CPython 3.13's report under PYTHONMALLOC=mimalloc (sys._debugmallocstats), as recorded."""
    report = (FIXTURES / "mimalloc-stats-3.13.txt").read_text()
    assert object_allocator(report) == CPYTHON_MIMALLOC
    usage = parse_mimalloc_stats(report)
    assert usage == PymallocUsage(2_734_880, 2_024_440, CPYTHON_MIMALLOC)
    assert parse_pymalloc_stats(report) is None
    assert object_allocator(None) == "malloc"


def test_freed_small_objects_show_as_free_memory_inside_cpython_mimalloc(
    cpython_mimalloc: None,
) -> None:
    # mimalloc's default purge delay only runs when it is next used: what was freed stays.
    figures = run_child(PINNED, PYTHONMALLOC="mimalloc", MIMALLOC_PURGE_DELAY="10")
    after = figures["after"]
    assert after["object_allocator"] == CPYTHON_MIMALLOC
    assert grew(figures, "pymalloc_free_bytes") > 8 * MB, figures
    assert grew(figures, "live_objects_bytes") > 8 * MB, figures
    assert "CPython's mimalloc" in str(after["advice"])


def test_under_cpythons_mimalloc_its_pages_are_what_malloc_does_not_hold() -> None:
    """Its own report misses the threadpool's live heaps: what the process holds beyond
    malloc's pages is counted as mimalloc's."""
    reported = PymallocUsage(20 * MB, 15 * MB, CPYTHON_MIMALLOC)
    jemalloc = HeapUsage("jemalloc", {"allocated_bytes": 30 * MB, "resident_bytes": 40 * MB})
    held = holdings._under_cpython_mimalloc(200 * MB, 5 * MB, reported, jemalloc)
    assert held.pymalloc == PymallocUsage(160 * MB, 15 * MB, CPYTHON_MIMALLOC)
    assert held.allocator_free_bytes == 10 * MB + 145 * MB
    assert held.live_bytes == 45 * MB
    glibc = HeapUsage("glibc", {"heap_used_bytes": 20 * MB, "mmap_used_bytes": 5 * MB})
    held = holdings._under_cpython_mimalloc(100 * MB, 5 * MB, reported, glibc)
    assert held.pymalloc is not None and held.pymalloc.arenas_bytes == 75 * MB
    assert held.malloc_free_bytes == 0
    assert "most in CPython's mimalloc" in help_line(held, "glibc")
    unknown = holdings._under_cpython_mimalloc(None, None, reported, glibc)
    assert unknown.pymalloc == reported and unknown.allocator_free_bytes is None
