"""The smaps breakdown: classification, sums in bytes, order, and the live process."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from app.memory.smaps import (
    MappingUsage,
    Rollup,
    classify,
    parse_rollup,
    parse_smaps,
    read_breakdown,
    read_rollup,
)
from tests.memory.conftest import FIXTURES

KiB = 1024
HANDCRAFTED = FIXTURES / "proc" / "handcrafted.smaps"
REAL = FIXTURES / "proc" / "python3.11-threads.smaps"  # a trimmed /proc/<pid>/smaps, Debian 12


@pytest.mark.parametrize(
    ("pathname", "kind"),
    [
        ("", "[anon]"),
        ("[heap]", "[heap]"),
        ("[stack]", "[stack]"),
        ("[stack:4242]", "[stack]"),
        ("[vdso]", "[vdso]"),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6", "file"),
        ("/opt/my app/lib with spaces.so", "file"),
        ("/memfd:pymalloc (deleted)", "[anon-shared]"),
        ("/memfd:jit", "[anon-shared]"),
        ("/dev/shm/cache.bin (deleted)", "[anon-shared]"),
    ],
)
def test_classify(pathname: str, kind: str) -> None:
    assert classify(pathname) == kind


def test_handcrafted_sums_in_bytes_largest_first() -> None:
    usages = parse_smaps(HANDCRAFTED.read_text())
    assert usages == [
        MappingUsage("[anon]", 2, 2560 * KiB, 2304 * KiB, 2560 * KiB, 40 * KiB),
        MappingUsage("[heap]", 1, 1000 * KiB, 1000 * KiB, 1000 * KiB, 0),
        MappingUsage("file", 2, 650 * KiB, 110 * KiB, 0, 0),
        MappingUsage("[anon-shared]", 2, 400 * KiB, 250 * KiB, 0, 0),
        MappingUsage("[stack]", 2, 140 * KiB, 140 * KiB, 140 * KiB, 0),
        MappingUsage("[vdso]", 1, 4 * KiB, 0, 0, 0),
    ]


def test_real_python_smaps() -> None:
    by_kind = {u.kind: u for u in parse_smaps(REAL.read_text())}
    # Totals worked out by hand from the fixture's Rss/Pss lines.
    assert by_kind["[anon]"].mappings == 8
    assert by_kind["[anon]"].rss_bytes == 25448 * KiB  # the thread's arena and pymalloc
    assert by_kind["[heap]"].rss_bytes == 776 * KiB
    assert by_kind["file"].mappings == 6
    assert (by_kind["file"].rss_bytes, by_kind["file"].pss_bytes) == (4436 * KiB, 3382 * KiB)
    assert by_kind["file"].anonymous_bytes == 0
    assert by_kind["[stack]"].rss_bytes == 36 * KiB
    assert {"[vdso]", "[vvar]", "[vsyscall]"} <= by_kind.keys()


def test_sums_match_the_file_totals() -> None:
    text = REAL.read_text()
    usages = parse_smaps(text)
    headers = re.findall(r"^[0-9a-f]+-[0-9a-f]+ ", text, flags=re.MULTILINE)
    assert sum(u.mappings for u in usages) == len(headers)
    for field, attr in [("Rss", "rss_bytes"), ("Pss", "pss_bytes"), ("Swap", "swap_bytes")]:
        total = sum(int(v) for v in re.findall(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE))
        assert sum(getattr(u, attr) for u in usages) == total * KiB, field
    rss = [u.rss_bytes for u in usages]
    assert rss == sorted(rss, reverse=True)


def test_as_dict_carries_every_figure() -> None:
    (first, *_) = parse_smaps(HANDCRAFTED.read_text())
    assert first.as_dict() == {
        "kind": "[anon]",
        "mappings": 2,
        "rss_bytes": 2560 * KiB,
        "pss_bytes": 2304 * KiB,
        "anonymous_bytes": 2560 * KiB,
        "swap_bytes": 40 * KiB,
    }


def test_lines_before_the_first_header_and_empty_text_are_ignored() -> None:
    assert parse_smaps("") == []
    assert parse_smaps("Rss: 4 kB\n") == []


def test_read_breakdown_from_a_proc_root(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    shutil.copy(HANDCRAFTED, tmp_path / "4242" / "smaps")
    assert read_breakdown(4242, proc_root=tmp_path) == parse_smaps(HANDCRAFTED.read_text())


def test_unreadable_smaps_gives_an_empty_list(tmp_path: Path) -> None:
    assert read_breakdown(4242, proc_root=tmp_path) == []
    (tmp_path / "4243" / "smaps").mkdir(parents=True)  # a directory: read fails even as root
    assert read_breakdown(4243, proc_root=tmp_path) == []


def test_breakdown_of_this_process_adds_up_to_its_rss() -> None:
    usages = read_breakdown()
    assert usages, "this process's smaps should be readable"
    kinds = {u.kind for u in usages}
    assert {"[heap]", "file", "[stack]"} <= kinds
    total = sum(u.rss_bytes for u in usages)
    rss = psutil.Process().memory_info().rss
    # Two reads a moment apart of a process that keeps allocating: within 20%.
    assert 0.8 <= total / rss <= 1.2, (total, rss)


def test_breakdown_of_another_process() -> None:
    code = "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        usages = read_breakdown(child.pid)
        assert usages
        total = sum(u.rss_bytes for u in usages)
        rss = psutil.Process(child.pid).memory_info().rss
        assert 0.8 <= total / rss <= 1.2, (total, rss)
    finally:
        child.communicate(b"", timeout=10)


# smaps_rollup: the totals behind USS and PSS

ROLLUP = FIXTURES / "proc" / "handcrafted.smaps_rollup"


def test_rollup_sums_the_private_fields_into_uss() -> None:
    """Pss_Dirty, Pss_Anon... are not Pss; Private_Hugetlb counts, as psutil counts it."""
    assert parse_rollup(ROLLUP.read_text()) == Rollup(
        rss_bytes=30000 * KiB,
        pss_bytes=20000 * KiB,
        uss_bytes=(1000 + 18000 + 2048) * KiB,
        swap_bytes=512 * KiB,
    )


def test_rollup_of_a_whole_smaps_file_is_its_sum() -> None:
    """Before Linux 4.14 there is no smaps_rollup: the same fields summed over smaps."""
    text = REAL.read_text()
    totals = parse_rollup(text)
    breakdown = parse_smaps(text)
    assert totals.rss_bytes == sum(usage.rss_bytes for usage in breakdown)
    assert totals.pss_bytes == sum(usage.pss_bytes for usage in breakdown)
    assert 0 < totals.uss_bytes <= totals.pss_bytes


def test_rollup_falls_back_to_smaps(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    shutil.copy(REAL, tmp_path / "42" / "smaps")
    assert read_rollup(42, tmp_path) == parse_rollup(REAL.read_text())
    assert read_rollup(43, tmp_path) is None


def test_live_rollup_agrees_with_live_smaps() -> None:
    """The kernel's sum and ours, read back to back from this process: within 2%."""
    for _ in range(5):
        rollup = read_rollup()
        summed = parse_rollup(Path("/proc/self/smaps").read_text())
        assert rollup is not None
        if all(
            abs(a / b - 1) < 0.02
            for a, b in [(rollup.pss_bytes, summed.pss_bytes), (rollup.uss_bytes, summed.uss_bytes)]
        ):
            return
    pytest.fail(f"smaps_rollup {rollup}, smaps summed {summed}")
