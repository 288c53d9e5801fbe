"""Allocator detection from the mappings, and each allocator's release call, for real."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from app.memory import allocator
from app.memory.allocator import detect_allocator, mapped_allocator
from tests.memory.conftest import REPO, allocator_free_environ

LIBC = "7f1a2b000000-7f1a2b028000 r--p 00000000 fe:00 1234   /usr/lib/x86_64-linux-gnu/libc.so.6"
ANON = "7f1a2c000000-7f1a2c021000 rw-p 00000000 00:00 0 "
JEMALLOC = (
    "7f1a2d000000-7f1a2d00b000 r-xp 00000000 fe:00 4321   "
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
)

DETECT = (
    "import json; from app.memory.allocator import detect_allocator; a = detect_allocator(); "
    "print(json.dumps([a.name, a.library, a.method, a.release() if a.release else None]))"
)


def this_process_preloads_jemalloc() -> bool:
    return "libjemalloc" in Path("/proc/self/maps").read_text()


def run_snippet(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter with ``env`` (a preload takes effect only at exec)."""
    environ = allocator_free_environ()
    environ.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=environ, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip


def detect_in_subprocess(**env: str) -> tuple[list[object], str]:
    done = run_snippet(DETECT, **env)
    return json.loads(done.stdout), done.stderr


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([LIBC, ANON], None),
        ([LIBC, JEMALLOC, ANON], ("jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")),
        (
            [ANON, "7f00-7f01 r-xp 00000000 fe:00 9 /usr/lib/libtcmalloc_minimal.so.4"],
            ("tcmalloc", "/usr/lib/libtcmalloc_minimal.so.4"),
        ),
        (
            ["7f00-7f01 r-xp 00000000 fe:00 9 /opt/lib/libmimalloc.so.2.1 (deleted)"],
            ("mimalloc", "/opt/lib/libmimalloc.so.2.1 (deleted)"),
        ),
        # Only the file name counts, not a folder that happens to carry the name.
        (["7f00-7f01 r--p 00000000 fe:00 9 /srv/libjemalloc-notes/readme.so"], None),
        ([], None),
    ],
)
def test_mapped_allocator(lines: list[str], expected: tuple[str, str] | None) -> None:
    assert mapped_allocator("\n".join(lines)) == expected


def test_this_process_runs_glibc_with_malloc_trim() -> None:
    if this_process_preloads_jemalloc():
        pytest.skip("the test run itself was started with jemalloc preloaded")
    found = detect_allocator()
    assert (found.name, found.library, found.method) == ("glibc", None, "malloc_trim")
    assert found.release is not None
    assert isinstance(found.release(), bool)


def test_unreadable_maps_falls_back_to_the_libc(tmp_path: Path) -> None:
    found = detect_allocator(tmp_path / "no-maps")
    assert (found.name, found.method) == ("glibc", "malloc_trim")


def test_jemalloc_mapped_without_mallctl_degrades_to_gc_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if this_process_preloads_jemalloc():
        pytest.skip("the test run itself was started with jemalloc preloaded")
    maps = tmp_path / "maps"
    maps.write_text(f"{LIBC}\n{JEMALLOC}\n")  # mapped, but not preloaded: no global mallctl
    with caplog.at_level(logging.WARNING):
        found = detect_allocator(maps)
    assert (found.name, found.method, found.release) == ("jemalloc", "none", None)
    assert found.library == "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    assert "mallctl is not exported" in caplog.text


def test_non_linux_has_no_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    found = detect_allocator()
    assert (found.name, found.method, found.release) == ("non-linux (darwin)", "none", None)


@pytest.mark.parametrize(("libc", "name"), [(("", ""), "unknown"), (("musl", "1.2.4"), "musl")])
def test_unknown_libc_has_no_release(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, libc: tuple[str, str], name: str
) -> None:
    maps = tmp_path / "maps"
    maps.write_text(ANON + "\n")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: libc)
    found = detect_allocator(maps)
    assert (found.name, found.method, found.release) == (name, "none", None)


def test_jemalloc_preloaded_in_a_real_process(jemalloc: str) -> None:
    (name, library, method, released), _ = detect_in_subprocess(LD_PRELOAD=jemalloc)
    assert name == "jemalloc"
    assert isinstance(library, str) and library.endswith("/libjemalloc.so.2")
    assert method == "jemalloc_purge"
    assert released is True  # mallctl("arena.4096.purge") returned 0


def test_a_missing_preload_is_seen_as_glibc() -> None:
    # ld.so only warns about a preload it cannot find: the variable is not the truth.
    (name, library, method, released), stderr = detect_in_subprocess(
        LD_PRELOAD="libjemalloc-absent.so.9"
    )
    assert "libjemalloc-absent.so.9" in stderr
    assert (name, library, method) == ("glibc", None, "malloc_trim")
    assert isinstance(released, bool)


SETTINGS = (
    "import json; from app.memory.allocator import detect_allocator; a = detect_allocator(); "
    "heap = a.heap_usage(); print(json.dumps({'name': a.name, 'method': a.method, "
    "'options': dict(a.options), 'not_applied': a.not_applied, "
    "'heap': heap.as_dict() if heap else None, 'released': a.release() if a.release else None}))"
)


def settings_in_subprocess(**env: str) -> dict[str, object]:
    found: dict[str, object] = json.loads(run_snippet(SETTINGS, **env).stdout)
    return found


def test_tcmalloc_preloaded_releases_and_reports_its_settings(tcmalloc: str) -> None:
    found = settings_in_subprocess(
        LD_PRELOAD=tcmalloc,
        TCMALLOC_AGGRESSIVE_DECOMMIT="true",
        TCMALLOC_RELEASE_RATE="10",
        PYTHONMALLOC="malloc",
    )
    assert (found["name"], found["method"]) == ("tcmalloc", "tcmalloc_release")
    assert found["released"] is True  # MallocExtension_ReleaseFreeMemory was called
    options = found["options"]
    assert isinstance(options, dict)
    assert options["TCMALLOC_AGGRESSIVE_DECOMMIT"] == "1"  # read back from tcmalloc
    assert options["TCMALLOC_RELEASE_RATE"].startswith("10")  # read back, or said it is not
    assert found["not_applied"] is None
    heap = found["heap"]
    assert isinstance(heap, dict)
    assert 0 < heap["allocated_bytes"] <= heap["resident_bytes"]


def test_tcmalloc_reports_its_own_default_where_the_environment_is_silent(tcmalloc: str) -> None:
    found = settings_in_subprocess(LD_PRELOAD=tcmalloc)
    options = found["options"]
    assert isinstance(options, dict)
    assert options["TCMALLOC_AGGRESSIVE_DECOMMIT"] == "0"  # gperftools' default
    assert (
        "TCMALLOC_RELEASE_RATE" not in options
        or "environment" not in options["TCMALLOC_RELEASE_RATE"]
    )


def test_glibc_settings_are_shown_as_the_environment_gave_them() -> None:
    found = settings_in_subprocess(
        MALLOC_TRIM_THRESHOLD_="128000",
        MALLOC_MMAP_THRESHOLD_="131072",
        GLIBC_TUNABLES="glibc.malloc.arena_max=2:glibc.rtld.optional_static_tls=1024",
    )
    assert found["name"] == "glibc"
    assert found["options"] == {
        "MALLOC_TRIM_THRESHOLD_": f"128000 {allocator.GLIBC_NOTE}",
        "MALLOC_MMAP_THRESHOLD_": f"131072 {allocator.GLIBC_NOTE}",
        "GLIBC_TUNABLES": f"glibc.malloc.arena_max=2 {allocator.GLIBC_NOTE}",
    }
    assert settings_in_subprocess()["options"] == {}
