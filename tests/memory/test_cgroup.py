"""cgroup readings from fixture trees: v1, v2, nested v2, unlimited, unreadable, none."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.memory.cgroup import (
    CgroupMemory,
    read_cgroup_at,
    read_cgroup_memory,
)
from tests.memory.conftest import FIXTURES

MiB = 1024 * 1024


def read(tree: str | Path) -> CgroupMemory | None:
    base = FIXTURES / "cgroup" / tree if isinstance(tree, str) else tree
    return read_cgroup_memory(base / "sys" / "fs" / "cgroup", base / "proc_self_cgroup")


@pytest.fixture
def tree_copy(tmp_path: Path) -> Callable[[str], Path]:
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(FIXTURES / "cgroup" / name, target)
        return target

    return copy


def test_v2_in_a_container_namespace() -> None:
    assert read("v2") == CgroupMemory(
        version=2,
        path="/",
        limit_bytes=512 * MiB,
        usage_bytes=150 * MiB,
        working_set_bytes=(150 - 20) * MiB,  # memory.current - inactive_file
        peak_bytes=230 * MiB,  # memory.peak: the kernel's high-water mark
    )


def test_v2_nested_keeps_the_smaller_parent_limit() -> None:
    reading = read("v2-nested")
    assert reading is not None
    assert reading.version == 2
    assert reading.path == "/system.slice/app.service"
    assert reading.limit_bytes == 256 * MiB  # the slice's, not the service's own 1 GiB
    assert reading.usage_bytes == 120 * MiB  # the service's own usage, not the slice's
    assert reading.working_set_bytes == 112 * MiB


def test_v2_max_means_no_limit() -> None:
    reading = read("unlimited")
    assert reading is not None
    assert reading.limit_bytes is None
    assert reading.usage_bytes == 80 * MiB
    assert reading.working_set_bytes == 76 * MiB


def test_v1_takes_the_smaller_of_own_and_hierarchical_limit() -> None:
    # A hybrid host: v1 memory controller plus a v2 line; v1 is what enforces memory.
    assert read("v1") == CgroupMemory(
        version=1,
        path="/docker/4f2a9c",
        limit_bytes=256 * MiB,
        usage_bytes=200 * MiB,
        working_set_bytes=(200 - 30) * MiB,  # total_inactive_file, not the local one
        peak_bytes=250 * MiB,  # memory.max_usage_in_bytes
    )


def test_v1_page_counter_max_means_no_limit() -> None:
    reading = read("v1-unlimited")
    assert reading is not None
    assert reading.version == 1
    assert reading.limit_bytes is None  # 9223372036854771712
    assert reading.usage_bytes == 70 * MiB
    assert reading.working_set_bytes == 68 * MiB


def test_no_memory_controller_reads_none() -> None:
    assert read("none") is None


def test_missing_proc_self_cgroup_reads_none(tmp_path: Path) -> None:
    assert read_cgroup_memory(tmp_path, tmp_path / "absent") is None


def test_path_outside_the_mount_falls_back_to_the_mount(tree_copy: Callable[[str], Path]) -> None:
    # Without a cgroup namespace a container sees its host path, but the mount is its own cgroup.
    tree = tree_copy("v2")
    (tree / "proc_self_cgroup").write_text("0::/kubepods/burstable/pod1/abc\n")
    reading = read(tree)
    assert reading is not None
    assert (reading.limit_bytes, reading.usage_bytes) == (512 * MiB, 150 * MiB)


def test_unreadable_files_give_none_fields(tree_copy: Callable[[str], Path]) -> None:
    tree = tree_copy("v2")
    folder = tree / "sys" / "fs" / "cgroup"
    (folder / "memory.max").unlink()
    (folder / "memory.max").mkdir()  # reading a directory fails, even as root
    (folder / "memory.stat").unlink()
    reading = read(tree)
    assert reading is not None
    assert reading.limit_bytes is None
    assert reading.usage_bytes == 150 * MiB
    assert reading.working_set_bytes == 150 * MiB  # nothing known to subtract


def test_garbage_usage_gives_none_usage_and_working_set(tree_copy: Callable[[str], Path]) -> None:
    tree = tree_copy("v2")
    (tree / "sys" / "fs" / "cgroup" / "memory.current").write_text("not a number\n")
    reading = read(tree)
    assert reading is not None
    assert reading.limit_bytes == 512 * MiB
    assert (reading.usage_bytes, reading.working_set_bytes) == (None, None)


def test_v1_unreadable_limit_falls_back_to_hierarchical(tree_copy: Callable[[str], Path]) -> None:
    tree = tree_copy("v1")
    folder = tree / "sys" / "fs" / "cgroup" / "memory" / "docker" / "4f2a9c"
    (folder / "memory.limit_in_bytes").write_text("")
    reading = read(tree)
    assert reading is not None
    assert reading.limit_bytes == 256 * MiB


def test_working_set_never_negative(tree_copy: Callable[[str], Path]) -> None:
    tree = tree_copy("unlimited")
    (tree / "sys" / "fs" / "cgroup" / "memory.stat").write_text(f"inactive_file {900 * MiB}\n")
    reading = read(tree)
    assert reading is not None
    assert reading.working_set_bytes == 0


# --- a known folder -----------------------------------------------------------------------------


def test_a_known_folder_reads_as_its_version_with_its_path() -> None:
    v2 = FIXTURES / "cgroup" / "v2-nested" / "sys" / "fs" / "cgroup"
    reading = read_cgroup_at(v2 / "system.slice" / "app.service", v2)
    assert reading is not None and reading == read("v2-nested")
    v1 = FIXTURES / "cgroup" / "v1" / "sys" / "fs" / "cgroup"
    assert read_cgroup_at(v1 / "memory" / "docker" / "4f2a9c", v1) == read("v1")
    assert read_cgroup_at(v1 / "cpu", v1) is None
