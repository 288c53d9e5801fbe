"""What stayed after the load, and the remedy line: from recorded splits of each kind of cause,
and from a real process's /proc where there is no status route."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from app.memory.document import StatusDocument, read_status
from app.memory.measure import MB
from scripts.verify.core.stayed import (
    FREEING_PROFILE,
    Split,
    Stayed,
    across_cycles,
    split_from_proc,
    split_from_status,
    stayed_line,
)


def route(
    live: int, free: int, file_pages: int, *, pymalloc_free: int | None = 0,
    allocator: str = "glibc", gc_objects: int = 1000, pid: int = 7,
    sites: list[dict[str, object]] | None = None,
) -> Split:  # fmt: skip
    shown = tuple(f"{s['where']} {int(str(s['size_bytes'])) / MB:.1f} MB" for s in sites or ())
    return Split(
        "status route", pid, live, free, pymalloc_free, file_pages, live + free, allocator,
        gc_objects, shown,
    )  # fmt: skip


def test_free_memory_pinned_in_pymalloc_names_the_freeing_profile() -> None:
    before = route(40 * MB, 5 * MB, 12 * MB, pymalloc_free=2 * MB)
    after = route(42 * MB, 85 * MB, 12 * MB, pymalloc_free=72 * MB)
    line = Stayed(before, after).line()
    assert "free memory inside the allocators +80.0 MB" in line
    assert "live objects +2.0 MB" in line and "file pages +0.0 MB" in line
    assert f"most of it is free memory inside pymalloc: try the {FREEING_PROFILE} profile" in line
    assert "verify compare --command" in line


def test_free_memory_in_glibc_and_pymalloc_names_both() -> None:
    before = route(40 * MB, 5 * MB, 12 * MB, pymalloc_free=2 * MB)
    after = route(40 * MB, 65 * MB, 12 * MB, pymalloc_free=32 * MB)
    assert "inside glibc and pymalloc" in Stayed(before, after).line()


def test_free_memory_in_jemalloc_alone_is_a_purge_away() -> None:
    before = route(40 * MB, 2 * MB, 12 * MB, pymalloc_free=None, allocator="jemalloc")
    after = route(40 * MB, 30 * MB, 12 * MB, pymalloc_free=None, allocator="jemalloc")
    line = Stayed(before, after).line()
    assert "free memory inside jemalloc, in slabs" in line and FREEING_PROFILE not in line
    assert "a purge returns the latter" in line


def test_live_growth_is_a_leak_or_a_cache_with_its_top_site() -> None:
    before = route(40 * MB, 5 * MB, 12 * MB, gc_objects=10_000)
    sites = [{"where": "service.py:42", "size_bytes": 35 * MB}]
    after = route(75 * MB, 6 * MB, 12 * MB, gc_objects=210_000, sites=sites)
    line = Stayed(before, after).line()
    assert "live objects grew 35.0 MB (+200,000 objects gc tracks)" in line
    assert "a leak or an unbounded cache; top site service.py:42 35.0 MB" in line
    untraced = Stayed(before, route(75 * MB, 6 * MB, 12 * MB)).line()
    assert "PYTHONTRACEMALLOC=1 on the service names the lines" in untraced


def test_file_pages_need_nothing_and_small_changes_no_remedy() -> None:
    before = route(40 * MB, 5 * MB, 12 * MB)
    assert (
        "file pages, which the kernel drops"
        in Stayed(before, route(41 * MB, 5 * MB, 40 * MB)).line()
    )
    quiet = Stayed(before, route(41 * MB, 6 * MB, 13 * MB)).line()
    assert quiet.endswith("nothing worth a remedy stayed")
    # 8 MB of a 100 MB spike is what allocators keep for reuse, not a cause; of 20 MB it is.
    some = Stayed(before, route(40 * MB, 13 * MB, 12 * MB))
    assert some.line(spike_bytes=100 * MB).endswith("nothing worth a remedy stayed")
    assert "try the" in some.line(spike_bytes=20 * MB)


def test_readings_from_two_workers_or_two_sources_make_no_line() -> None:
    one = route(40 * MB, 5 * MB, 12 * MB, pid=7)
    assert stayed_line(one, route(90 * MB, 5 * MB, 12 * MB, pid=8)) is None
    proc = Split("/proc", None, None, None, None, 12 * MB, 60 * MB, None, None)
    assert stayed_line(one, proc) is None and stayed_line(None, one) is None
    assert stayed_line(one, one) is not None


def test_without_a_status_route_proc_splits_anonymous_from_file_pages() -> None:
    code = (
        "import sys; block = bytearray(48 * 1024 * 1024); print('ok', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ok\n"
        split = split_from_proc([child.pid, os.getpid()])
        alone = split_from_proc([child.pid])
    finally:
        child.kill()
        child.wait()
    assert split is not None and alone is not None
    assert alone.anonymous_bytes is not None and alone.anonymous_bytes >= 48 * MB
    assert split.anonymous_bytes is not None and split.anonymous_bytes > alone.anonymous_bytes
    assert set(alone.parts()) == {"anonymous", "file_pages"}
    before = Split("/proc", None, None, None, None, alone.file_bytes, 10 * MB, None, None)
    line = Stayed(before, alone).line()
    assert "mount the memory package's status route" in line
    assert split_from_proc([2**22 + 1], proc_root=Path("/proc")) is None  # no such process


def test_the_status_route_document_reads_as_a_split() -> None:
    document: StatusDocument = read_status(
        {
            "pid": 11,
            "allocator": {"name": "jemalloc"},
            "cleanup": {},
            "holdings": {
                "anonymous_bytes": 90 * MB, "file_bytes": 12 * MB,
                "live_objects_bytes": 60 * MB, "allocator_free_bytes": 20 * MB,
                "pymalloc_arenas_bytes": None, "pymalloc_free_bytes": None,
                "malloc_in_use_bytes": 60 * MB, "malloc_free_bytes": 20 * MB,
                "gc_objects": 5, "traced_bytes": None,
                "top_sites": [{"where": "a.py:3", "size_bytes": 2 * MB, "blocks": 9}],
            },
        }
    )  # fmt: skip
    split = split_from_status(document)
    assert split is not None and split.allocator == "jemalloc" and split.pid == 11
    assert split.parts() == {
        "live_objects": 60 * MB, "allocator_free": 20 * MB, "file_pages": 12 * MB,
    }  # fmt: skip
    assert split.top_sites == ("a.py:3 2.0 MB",)
    assert Split.from_dict(split.as_dict()) == split
    older = read_status({"pid": 1, "allocator": {"name": "glibc"}, "cleanup": {}})
    assert split_from_status(older) is None  # a package from before the split: /proc instead


def test_a_soak_names_the_part_that_grows_every_cycle() -> None:
    sites = [{"where": "cache.py:9", "size_bytes": 105 * MB}]
    cycles = [
        route(40 * MB, 20 * MB, 12 * MB, gc_objects=10_000),
        route(75 * MB, 21 * MB, 12 * MB, gc_objects=110_000),
        None,  # a cycle whose status read failed is left out, not counted as no growth
        route(145 * MB, 22 * MB, 12 * MB, gc_objects=310_000, sites=sites),
    ]
    line = across_cycles(cycles)
    assert line is not None and "live objects +52.5 MB" in line
    assert "live objects grew 52.5 MB a cycle (+150,000 objects gc tracks)" in line
    assert "top site cache.py:9 105.0 MB" in line
    steady = across_cycles([route(40 * MB, 20 * MB, 12 * MB), route(41 * MB, 21 * MB, 12 * MB)])
    assert steady is not None and steady.endswith("no part grows from cycle to cycle")
    assert across_cycles([route(40 * MB, 20 * MB, 12 * MB), None]) is None


def test_free_memory_in_cpythons_mimalloc_is_named_so() -> None:
    mimalloc = "mimalloc (CPython's)"
    before = dataclasses.replace(
        route(40 * MB, 3 * MB, 12 * MB, pymalloc_free=1 * MB, allocator="jemalloc"),
        object_allocator=mimalloc,
    )
    after = dataclasses.replace(
        route(41 * MB, 73 * MB, 12 * MB, pymalloc_free=70 * MB, allocator="jemalloc"),
        object_allocator=mimalloc,
    )
    line = Stayed(before, after).line()
    assert f"most of it is free memory inside {mimalloc}: try the {FREEING_PROFILE}" in line
