"""Debian's libjemalloc2 from other suites, unpacked under .cache/: `python -m lab.jemalloc`.

The jemalloc options read back at start (app/memory/jemalloc_conf.py) are tested against each
jemalloc a user can get from Debian: trixie's 5.3.0 (the image's base) and the unstable suite's
5.3.1. Nothing is installed system-wide: `apt-get download` runs with a sources list, package
lists and cache of its own under .cache/jemalloc/apt, from the archive the machine's own apt
sources name, and `dpkg-deb -x` unpacks each package into .cache/jemalloc/<suite>/.

A suite's jemalloc needs that suite's glibc (sid's 5.3.1 asks for GLIBC_2.38; Debian 12 has
2.36), so the suite's libc6 is unpacked beside it, and a test runs the interpreter through the
suite's own loader: `<suite>/usr/lib64/ld-linux-x86-64.so.2 --library-path <suite>/usr/lib/<triplet>
--preload <that libjemalloc.so.2> python ...` (loader() and library() below).

  exit 0  every suite's library is unpacked (already there, or fetched now)
  exit 1  a fetch failed (the message says which suite and why)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "jemalloc"
SUITES = ("trixie", "sid")
PACKAGES = ("libjemalloc2", "libc6")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def archive_uri(sources: Sequence[Path] = APT_SOURCES) -> str | None:
    """The Debian archive this machine's apt already uses (not its security archive)."""
    texts = []
    for source in sources:
        files = sorted(source.glob("*.sources")) + sorted(source.glob("*.list"))
        for path in files if source.is_dir() else [source]:
            try:
                texts.append(path.read_text())
            except OSError:
                continue
    for text in texts:
        for uri in re.findall(r"^URIs:\s*(\S+)|^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            found = str(uri[0] or uri[1])
            if found.rstrip("/").endswith("/debian"):
                return found
    return None


def library(suite: str, cache: Path = CACHE) -> Path | None:
    """The unpacked libjemalloc.so.2 of a suite, or None if it has not been fetched."""
    found = sorted((cache / suite).glob("usr/lib/*/libjemalloc.so.2"))
    return found[0] if found else None


def loader(suite: str, cache: Path = CACHE) -> Path | None:
    """The suite's dynamic loader (its glibc's ld.so), or None if it has not been fetched."""
    found = sorted((cache / suite).glob("usr/lib*/ld-linux*.so.*"))
    return found[0] if found else None


def versions(suite: str, cache: Path = CACHE) -> str:
    """What was unpacked, e.g. "libjemalloc2 5.3.1-2, libc6 2.43-7"."""
    try:
        return (cache / suite / "VERSION").read_text().strip()
    except OSError:
        return "(not fetched)"


def _apt(apt_dir: Path) -> list[str]:
    return [
        "apt-get",
        "-qq",
        "-o", f"Dir::Etc::SourceList={apt_dir / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
        "-o", f"Dir::Cache={apt_dir}",
        "-o", "APT::Sandbox::User=root",
        "-o", "Debug::NoLocking=1",
    ]  # fmt: skip


def fetch(suite: str, uri: str, cache: Path = CACHE) -> Path:
    """Download the suite's libjemalloc2 and libc6 and unpack them; returns the library."""
    apt_dir = cache / "apt" / suite
    (apt_dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt_dir / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources.list").write_text(f"deb [signed-by={KEYRING}] {uri} {suite} main\n")
    subprocess.run([*_apt(apt_dir), "update"], check=True, stdin=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [*_apt(apt_dir), "download", *PACKAGES],
            check=True,
            cwd=download,
            stdin=subprocess.DEVNULL,
        )
        target = cache / suite
        shutil.rmtree(target, ignore_errors=True)
        unpacked = []
        for package in PACKAGES:
            (deb,) = Path(download).glob(f"{package}_*.deb")
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
            unpacked.append(f"{package} {deb.name.split('_')[1]}")
        (target / "VERSION").write_text(", ".join(unpacked) + "\n")
    found = library(suite, cache)
    if found is None or loader(suite, cache) is None:
        raise FileNotFoundError(f"{suite}: no libjemalloc.so.2 or ld.so in {', '.join(unpacked)}")
    return found


def say(line: str) -> None:
    sys.stdout.write(f"jemalloc: {line}\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n", 1)[0]
    parser = argparse.ArgumentParser(prog="python -m lab.jemalloc", description=summary)
    parser.add_argument("suites", nargs="*", default=list(SUITES), help="Debian suites")
    parser.add_argument("--refresh", action="store_true", help="fetch even if unpacked")
    args = parser.parse_args(argv)
    uri = archive_uri()
    failed = 0
    for suite in args.suites:
        found = None if args.refresh else library(suite)
        if found is None:
            if uri is None or shutil.which("apt-get") is None:
                say(f"{suite}: no apt-get, or no Debian archive in the apt sources")
                failed += 1
                continue
            try:
                found = fetch(suite, uri)
            except (OSError, ValueError, subprocess.CalledProcessError) as exc:
                say(f"{suite}: fetch failed: {exc}")
                failed += 1
                continue
        say(f"{suite}: {versions(suite)}: {found}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
