"""Process memory figures, compared with the kernel's own files read independently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from app.memory import measure
from app.memory.measure import fmt_mb, process_memory, rss_bytes

MB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def statm_rss(pid: int | str = "self") -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def test_rss_matches_statm() -> None:
    ours, kernel = rss_bytes(), statm_rss()
    assert 0.9 <= ours / kernel <= 1.1, (ours, kernel)


def test_rss_of_another_process_is_its_own() -> None:
    # A child that holds 64 MB more than a bare interpreter.
    code = "import sys; block = bytearray(64 * 1024 * 1024); sys.stdout.write('ok\\n'); "
    code += "sys.stdout.flush(); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ok\n"
        theirs = rss_bytes(child.pid)
        assert 0.9 <= theirs / statm_rss(child.pid) <= 1.1
        assert theirs >= 64 * MB
    finally:
        child.communicate(b"", timeout=10)


def test_process_memory_reports_uss_and_pss_under_rss() -> None:
    figures = process_memory()
    assert figures.pid == os.getpid()
    assert figures.uss_bytes is not None and figures.pss_bytes is not None
    assert 0 < figures.uss_bytes <= figures.pss_bytes <= figures.rss_bytes * 1.1
    assert set(figures.as_dict()) == {"pid", "rss_bytes", "uss_bytes", "pss_bytes"}


def test_process_memory_without_smaps_access(tmp_path: Path) -> None:
    figures = measure.process_memory(proc_root=tmp_path)  # neither smaps_rollup nor smaps
    assert (figures.uss_bytes, figures.pss_bytes) == (None, None)
    assert figures.rss_bytes > 0


def test_uss_and_pss_agree_with_psutils_own_reading() -> None:
    """The figures psutil's memory_full_info() gave before it was deprecated, from the same
    file; the process moves between the two reads, so a few tries within 2%."""
    if not hasattr(psutil.Process, "memory_full_info"):
        pytest.skip("this psutil no longer has memory_full_info() to compare with")
    for _ in range(5):
        ours, theirs = process_memory(), psutil.Process().memory_full_info()
        assert ours.uss_bytes is not None and ours.pss_bytes is not None
        ratios = (ours.uss_bytes / theirs.uss, ours.pss_bytes / theirs.pss)
        if all(abs(ratio - 1) < 0.02 for ratio in ratios):
            return
    pytest.fail(f"ours {ours}, psutil's {theirs}")


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "n/a"), (0, "0.0MB"), (MB, "1.0MB"), (int(380.5 * MB), "380.5MB"), (1536, "0.0MB")],
)
def test_fmt_mb(value: int | None, text: str) -> None:
    assert fmt_mb(value) == text
