"""lab.jemalloc: which archive it asks, and where it finds what it unpacked."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import jemalloc

DEB822 = """Types: deb
URIs: http://archive.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://archive.example/debian
Suites: bookworm bookworm-updates
Components: main
"""
ONE_LINE = "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"


@pytest.mark.parametrize(
    ("name", "text", "uri"),
    [
        ("debian.sources", DEB822, "http://archive.example/debian"),
        ("sources.list", ONE_LINE, "http://mirror.example/debian"),
        ("other.list", "deb http://ppa.example/ubuntu noble main\n", None),
    ],
)
def test_archive_uri_is_the_debian_archive_apt_already_uses(
    tmp_path: Path, name: str, text: str, uri: str | None
) -> None:
    folder = tmp_path / "sources.list.d"
    folder.mkdir()
    (folder / name).write_text(text)
    assert jemalloc.archive_uri([tmp_path / "sources.list", folder]) == uri


def test_library_and_loader_are_found_where_dpkg_deb_unpacks_them(tmp_path: Path) -> None:
    assert jemalloc.library("sid", tmp_path) is None and jemalloc.loader("sid", tmp_path) is None
    lib = tmp_path / "sid" / "usr" / "lib" / "x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libjemalloc.so.2").write_bytes(b"")
    (tmp_path / "sid" / "usr" / "lib64").mkdir()
    (tmp_path / "sid" / "usr" / "lib64" / "ld-linux-x86-64.so.2").write_bytes(b"")
    assert jemalloc.library("sid", tmp_path) == lib / "libjemalloc.so.2"
    assert jemalloc.loader("sid", tmp_path) == tmp_path / "sid/usr/lib64/ld-linux-x86-64.so.2"
    assert jemalloc.versions("sid", tmp_path) == "(not fetched)"
