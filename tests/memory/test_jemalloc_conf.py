"""MALLOC_CONF read back through mallctl: parsing, comparing, and each Debian jemalloc for real.

The real cases run a fresh interpreter with jemalloc preloaded: Debian's libjemalloc2 where it
is installed (5.3.0 on Debian 12 and 13), and the packages `python -m lab.jemalloc` unpacks under
.cache/jemalloc: trixie's 5.3.0 and the unstable suite's 5.3.1, each with its own suite's glibc
and loader (5.3.1 needs a newer glibc than Debian 12's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.memory.jemalloc_conf import (
    UNKNOWN,
    UNREAD,
    OptionCheck,
    check_options,
    not_applied_line,
    parse_malloc_conf,
)
from lab import jemalloc as fetched
from tests.memory.conftest import REPO, allocator_free_environ

PROFILE_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2"
DETECT = (
    "import json; from app.memory.allocator import detect_allocator; a = detect_allocator(); "
    "print(json.dumps({'name': a.name, 'options': dict(a.options), "
    "'not_applied': a.not_applied, 'heap': (a.heap_usage() or None) and a.heap_usage().figures}))"
)
SUITES = {"trixie": "5.3.0", "sid": "5.3.1"}  # the upstream version each suite ships


def reader(values: dict[str, str]):  # noqa: ANN201 - a Read
    return values.get


# parse_malloc_conf


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("", []),
        ("narenas:2", [("narenas", "2")]),
        (
            "background_thread:true, dirty_decay_ms:-1,",
            [("background_thread", "true"), ("dirty_decay_ms", "-1")],
        ),
        ("stats_print_opts:gmb", [("stats_print_opts", "gmb")]),
        ("narenas", [("narenas", "")]),  # no value: kept, so it is reported
    ],
)
def test_parse_malloc_conf(text: str, pairs: list[tuple[str, str]]) -> None:
    assert parse_malloc_conf(text) == pairs


# check_options, against a table of values standing in for jemalloc


def test_every_option_that_took_passes() -> None:
    read = reader({"narenas": "2", "background_thread": "true", "dirty_decay_ms": "-1"})
    checks = check_options(
        parse_malloc_conf("narenas:0x2,background_thread:true,dirty_decay_ms:-1"), read
    )
    assert all(check.took for check in checks), checks
    assert not_applied_line(checks, "5.3.0", {}) is None


def test_an_unknown_option_and_a_rejected_value_are_named_on_one_line() -> None:
    read = reader({"narenas": "8", "background_thread": "true"})
    conf = "background_thread:true,narenas:abc,no_such_option:1"
    checks = check_options(parse_malloc_conf(conf), read)
    assert [c.took for c in checks] == [True, False, False]
    line = not_applied_line(checks, "5.3.1", {"MALLOC_CONF": conf})
    assert line == (
        f"MALLOC_CONF={conf!r}: jemalloc 5.3.1 did not apply narenas:abc (in effect: 8); "
        "no_such_option:1 (not an option this jemalloc knows), and runs without it"
    )


def test_the_last_pair_for_a_name_wins_as_in_jemalloc() -> None:
    checks = check_options(parse_malloc_conf("narenas:4,narenas:2"), reader({"narenas": "2"}))
    assert checks == [OptionCheck("narenas", "2", "2")]


def test_lg_tcache_max_is_read_back_as_tcache_max() -> None:
    checks = check_options([("lg_tcache_max", "12")], reader({"tcache_max": "4096"}))
    assert checks == [OptionCheck("tcache_max", "4096", "4096")]
    assert checks[0].took


def test_narenas_zero_asks_for_the_automatic_count() -> None:
    assert OptionCheck("narenas", "0", "8").took


def test_a_known_option_of_unknown_type_is_trusted_not_compared() -> None:
    assert OptionCheck("hpa_dirty_mult", "0.5", UNREAD).took
    assert not OptionCheck("hpa_dirty_mult", "0.5", UNKNOWN).took


# the real thing


@pytest.fixture(params=["system", *SUITES])
def jemalloc_command(request: pytest.FixtureRequest) -> tuple[list[str], dict[str, str], str]:
    """(argv prefix, extra environment, expected version or "") to run python under jemalloc."""
    source = request.param
    if source == "system":
        return [], {"LD_PRELOAD": request.getfixturevalue("jemalloc")}, ""
    library, loader = fetched.library(source), fetched.loader(source)
    if library is None or loader is None:
        reason = f"{source}'s libjemalloc2 is not unpacked (run `python3 -m lab.jemalloc`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test jemalloc {SUITES[source]}: {reason}")
        pytest.skip(reason)
    argv = [str(loader), "--library-path", str(library.parent), "--preload", str(library)]
    return argv, {}, SUITES[source]


def detect(command: tuple[list[str], dict[str, str], str], conf: str) -> dict:
    prefix, extra, _ = command
    environ = allocator_free_environ()
    environ.update(PYTHONPATH=str(REPO), MALLOC_CONF=conf, **extra)
    done = subprocess.run(
        [*prefix, sys.executable, "-c", DETECT],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    result["stderr"] = done.stderr
    return result


def test_the_profiles_settings_take_and_are_shown(
    jemalloc_command: tuple[list[str], dict[str, str], str],
) -> None:
    found = detect(jemalloc_command, PROFILE_CONF)
    assert found["name"] == "jemalloc"
    assert found["not_applied"] is None, found
    options = found["options"]
    expected_version = jemalloc_command[2]
    assert options["version"].startswith(expected_version or "5.")
    assert {k: options[k] for k in ("background_thread", "dirty_decay_ms", "narenas")} == {
        "background_thread": "true",
        "dirty_decay_ms": "1000",
        "narenas": "2",
    }
    heap = found["heap"]
    assert 0 < heap["allocated_bytes"] <= heap["active_bytes"] <= heap["mapped_bytes"]


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        (PROFILE_CONF + ",no_such_option:1", "no_such_option:1 (not an option"),
        ("background_thread:true,narenas:two", "narenas:two (in effect: "),
        ("dirty_decay_ms:1000,thp:sometimes", "thp:sometimes (in effect: default)"),
    ],
    ids=["unknown-option", "rejected-number", "rejected-word"],
)
def test_what_jemalloc_ignored_is_named_on_one_line(
    jemalloc_command: tuple[list[str], dict[str, str], str], conf: str, named: str
) -> None:
    found = detect(jemalloc_command, conf)
    line = found["not_applied"]
    assert line is not None and "\n" not in line
    assert line.startswith(f"MALLOC_CONF={conf!r}: jemalloc 5.")
    assert named in line
    assert "<jemalloc>: Invalid conf" in found["stderr"]  # jemalloc's own warning, ignored


def test_fetched_libraries_are_the_versions_named(
    jemalloc_command: tuple[list[str], dict[str, str], str],
) -> None:
    """What lab.jemalloc unpacked is what the suite ships (its VERSION file, from the .deb)."""
    expected = jemalloc_command[2]
    if not expected:
        pytest.skip("the system's libjemalloc2 has no VERSION file")
    suite = next(name for name, version in SUITES.items() if version == expected)
    assert fetched.versions(suite).startswith(f"libjemalloc2 {expected}-")
    assert Path(jemalloc_command[0][0]).name.startswith("ld-linux")
