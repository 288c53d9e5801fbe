"""Allocator profiles: the real file loads, environment() merges, bad files fail in one line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from app.profiles import PROFILES_FILE, ProfileError, load_profiles

GOOD_HEAD = 'default = "glibc"\n[profiles.glibc]\nsummary = "plain"\nallocator = "glibc"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    return path


def one_line_error(path: Path) -> str:
    with pytest.raises(ProfileError) as info:
        load_profiles(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_real_profiles_file_loads_with_a_deployable_default() -> None:
    profiles = load_profiles()
    raw = tomllib.loads(PROFILES_FILE.read_text())
    assert profiles.names == list(raw["profiles"])
    default = profiles.get(None)
    assert default.name == profiles.default == raw["default"]
    assert default.deploy is True
    for profile in profiles.profiles.values():
        assert profile.summary, f"{profile.name} has no summary"
        assert all(isinstance(v, str) for v in profile.env.values())
        if profile.allocator == "jemalloc":
            assert profile.preload is not None and "/" not in profile.preload


CANDIDATES = (
    "tcmalloc",
    "glibc-seed",
    "python-mimalloc",
    "python-mimalloc-jemalloc",
    "jemalloc-nopymalloc-large",
)


@pytest.mark.parametrize("name", CANDIDATES)
def test_candidates_are_not_deployable_until_measured(name: str) -> None:
    """None of their libraries is in the image, and none has been measured yet."""
    assert load_profiles().get(name).deploy is False


def test_tcmalloc_profile_preloads_gperftools_minimal_build() -> None:
    tcmalloc = load_profiles().get("tcmalloc")
    env, _ = tcmalloc.environment({})
    assert (tcmalloc.allocator, env["LD_PRELOAD"]) == ("tcmalloc", "libtcmalloc_minimal.so.4")
    assert env["PYTHONMALLOC"] == "malloc"


@pytest.mark.parametrize(
    ("name", "allocator"), [("python-mimalloc", "glibc"), ("python-mimalloc-jemalloc", "jemalloc")]
)
def test_cpython_mimalloc_profiles_name_the_malloc_beside_it(name: str, allocator: str) -> None:
    profile = load_profiles().get(name)
    assert profile.env["PYTHONMALLOC"] == "mimalloc"
    assert profile.allocator == allocator  # CPython's mimalloc holds Python's objects only


def test_baseline_is_not_deployable_and_turns_cleanup_off() -> None:
    baseline = load_profiles().get("baseline")
    assert baseline.deploy is False
    env, _ = baseline.environment({})
    assert env["MEMORY_CLEANUP"] == "0"


def test_unknown_profile_name_lists_the_allowed_ones() -> None:
    profiles = load_profiles()
    with pytest.raises(ProfileError) as info:
        profiles.get("hoard")
    message = str(info.value)
    assert message.startswith("MEMORY_PROFILE='hoard' is not a profile; allowed: ")
    assert all(name in message for name in profiles.names)


def test_environment_sets_profile_variables_and_preload() -> None:
    jemalloc = load_profiles().get("jemalloc-nopymalloc")
    base = {"PATH": "/usr/bin", "MEMORY_PROFILE": ""}
    env, kept = jemalloc.environment(base)
    assert kept == []
    assert env["PATH"] == "/usr/bin"
    assert env["LD_PRELOAD"] == jemalloc.preload
    assert env["MEMORY_PROFILE"] == "jemalloc-nopymalloc"
    for key, value in jemalloc.env.items():
        assert env[key] == value
    assert base == {"PATH": "/usr/bin", "MEMORY_PROFILE": ""}, "the base must not be modified"


def test_environment_keeps_operator_variables_and_reports_them() -> None:
    jemalloc = load_profiles().get("jemalloc-nopymalloc")
    base = {"MALLOC_CONF": "narenas:1", "PYTHONMALLOC": jemalloc.env["PYTHONMALLOC"]}
    env, kept = jemalloc.environment(base)
    assert env["MALLOC_CONF"] == "narenas:1"
    # Set to the profile's own value: nothing was overridden, nothing to report.
    assert kept == ["MALLOC_CONF"]


def test_environment_prepends_the_preload_to_an_existing_one() -> None:
    jemalloc = load_profiles().get("jemalloc")
    env, _ = jemalloc.environment({"LD_PRELOAD": "libfoo.so libbar.so"})
    assert env["LD_PRELOAD"] == "libjemalloc.so.2 libfoo.so libbar.so"
    env, _ = jemalloc.environment({"LD_PRELOAD": "libfoo.so libjemalloc.so.2"})
    assert env["LD_PRELOAD"] == "libjemalloc.so.2 libfoo.so"


def test_glibc_profile_leaves_ld_preload_alone() -> None:
    glibc = load_profiles().get("glibc-tuned")
    env, _ = glibc.environment({"LD_PRELOAD": "libfoo.so"})
    assert env["LD_PRELOAD"] == "libfoo.so"
    assert env["GLIBC_TUNABLES"] == glibc.env["GLIBC_TUNABLES"]
    assert "LD_PRELOAD" not in glibc.environment({})[0]


def test_environment_does_not_duplicate_a_colon_separated_preload() -> None:
    jemalloc = load_profiles().get("jemalloc")
    env, _ = jemalloc.environment({"LD_PRELOAD": "libfoo.so:libjemalloc.so.2"})
    assert env["LD_PRELOAD"].replace(":", " ").split().count("libjemalloc.so.2") == 1


def test_profiles_file_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MEMORY_PROFILES_FILE", str(write(tmp_path, GOOD_HEAD)))
    assert load_profiles().names == ["glibc"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            GOOD_HEAD + '[profiles.ho]\nallocator = "hoard"\n',
            "profile 'ho': allocator must be one of glibc, jemalloc, tcmalloc, mimalloc",
            id="unknown-allocator",
        ),
        pytest.param(
            GOOD_HEAD + '[profiles.je]\nallocator = "jemalloc"\n',
            "profile 'je': a jemalloc profile needs preload",
            id="jemalloc-without-preload",
        ),
        pytest.param(
            GOOD_HEAD + '[profiles.mi]\nallocator = "mimalloc"\n',
            "profile 'mi': a mimalloc profile needs preload",
            id="mimalloc-without-preload",
        ),
        pytest.param(
            GOOD_HEAD
            + '[profiles.je]\nallocator = "jemalloc"\n'
            + 'preload = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"\n',
            "profile 'je': preload must be a bare soname",
            id="preload-with-a-path",
        ),
        pytest.param(
            GOOD_HEAD + '[profiles.x]\nallocator = "glibc"\nenv = { MALLOC_ARENA_MAX = 2 }\n',
            "profile 'x': env must map names to strings",
            id="env-not-strings",
        ),
        pytest.param(
            GOOD_HEAD.replace('default = "glibc"\n', ""),
            "default None is not one of the profiles",
            id="default-missing",
        ),
        pytest.param(
            GOOD_HEAD.replace('"glibc"\n[', '"jemalloc"\n[', 1),
            "default 'jemalloc' is not one of the profiles",
            id="default-unknown",
        ),
        pytest.param(
            GOOD_HEAD + "deploy = false\n",
            "default 'glibc' is a baseline, not a deployable profile",
            id="default-is-a-baseline",
        ),
        pytest.param('default = "glibc"\n', "no [profiles.<name>] tables", id="no-profiles"),
        pytest.param(
            GOOD_HEAD + "[profiles.broken\nallocator = glibc\n",
            "cannot read allocator profiles from",
            id="toml-syntax-error",
        ),
    ],
)
def test_bad_profiles_file_gives_one_line(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in one_line_error(write(tmp_path, text))


def test_missing_profiles_file_gives_one_line(tmp_path: Path) -> None:
    message = one_line_error(tmp_path / "absent.toml")
    assert message.startswith(f"cannot read allocator profiles from {tmp_path / 'absent.toml'}")


def test_profile_that_is_not_a_table_gives_one_line(tmp_path: Path) -> None:
    text = 'default = "glibc"\n[profiles]\nglibc = "x"\n'
    assert "glibc" in one_line_error(write(tmp_path, text))


def test_deploy_must_be_a_boolean(tmp_path: Path) -> None:
    text = GOOD_HEAD + '[profiles.base]\nallocator = "glibc"\ndeploy = "false"\n'
    assert "deploy" in one_line_error(write(tmp_path, text))
