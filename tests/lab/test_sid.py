"""lab.sid: the commands it builds, the tests it picks, and how it reads what pip installed.

The whole path (debootstrap, venv, pytest under 3.14 or 3.15) needs root, the Debian mirror and
minutes; CI runs it from .ci/run. These tests check the parts that decide what that run does.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from lab import sid

REPO = Path(__file__).resolve().parents[2]
ROOT = Path("/cache/py314/rootfs")


@pytest.mark.parametrize("minor", sid.PYTHONS)
def test_debootstrap_makes_a_minbase_unstable_root_with_the_interpreter_and_jemalloc(
    minor: str,
) -> None:
    python = sid.Python(minor)
    argv = sid.debootstrap_command(ROOT, "http://mirror.example/debian", python.packages)
    assert argv[:2] == ["debootstrap", "--variant=minbase"]
    assert argv[-3:] == ["sid", str(ROOT), "http://mirror.example/debian"]
    (include,) = [a for a in argv if a.startswith("--include=")]
    assert set(include.removeprefix("--include=").split(",")) == {
        f"python{minor}",
        f"python{minor}-venv",
        "libjemalloc2",
    }
    assert python.interpreter == f"/usr/bin/python{minor}"


def test_each_version_has_a_cache_of_its_own_and_3_14_keeps_its_old_one() -> None:
    """3.14's root stays where it was (py314/, same folder name), so CI does not make it again;
    3.15's lives beside it and never overwrites it."""
    base = Path("/var/cache/lms")
    py314, py315 = sid.Python("3.14"), sid.Python("3.15")
    assert py314.cache(base) == base / "py314" and py315.cache(base) == base / "py315"
    assert sid.root_name("sid", py314.packages) == "rootfs-sid-aee0108d6e01"
    assert sid.root_name("sid", py314.packages) != sid.root_name("sid", py315.packages)


def test_the_root_gets_proc_dev_sys_and_the_repository() -> None:
    mounts = sid.mount_commands(ROOT, Path("/work/repo"))
    targets = {cmd[-1]: cmd[1:-1] for cmd in mounts}
    assert targets[f"{ROOT}/proc"] == ["-t", "proc", "proc"]
    assert targets[f"{ROOT}/dev"] == ["--rbind", "/dev"]
    assert targets[f"{ROOT}/sys"] == ["--rbind", "/sys"]  # /sys/fs/cgroup for the cgroup tests
    assert targets[f"{ROOT}/src"] == ["--bind", "/work/repo"]


def test_everything_runs_in_a_private_mount_namespace_mounts_first() -> None:
    env = {"PATH": "/opt/venv/bin:/usr/bin", "CI": "true"}
    argv = sid.in_root(ROOT, Path("/work/repo"), ["python", "-c", "print('a b')"], env)
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert argv[5:7] == ["/bin/sh", "-c"]
    steps: list[list[str]] = [[]]
    for token in shlex.split(argv[7]):
        if token == "&&":
            steps.append([])
        else:
            steps[-1].append(token)
    assert steps[:4] == sid.mount_commands(ROOT, Path("/work/repo"))
    assert steps[4][0] == "exec" and len(steps) == 5
    chroot = steps[4][1:]
    assert chroot[:5] == ["chroot", str(ROOT), "/usr/bin/env", "-i", "CI=true"]
    inner = chroot[-1]
    assert shlex.split(inner) == ["cd", "/src", "&&", "exec", "python", "-c", "print('a b')"]


def test_the_root_sees_a_clean_environment_with_ci_and_the_ca_bundle() -> None:
    host = {"PATH": "/work/.venv/bin:/usr/bin", "VIRTUAL_ENV": "/work/.venv", "CI": "true"}
    env = sid.chroot_env(host)
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    assert "VIRTUAL_ENV" not in env
    assert env["CI"] == "true"
    assert env["PIP_CERT"] == env["SSL_CERT_FILE"] == sid.CA_IN_ROOT
    assert "CI" not in sid.chroot_env({})


def test_a_symlink_in_the_root_is_replaced_not_written_through(tmp_path: Path) -> None:
    host_file = tmp_path / "host-resolv.conf"
    host_file.write_text("host\n")
    source = tmp_path / "source"
    source.write_text("nameserver 192.0.2.1\n")
    target = tmp_path / "root-resolv.conf"
    target.symlink_to(host_file)
    sid.copy_in(source, target)
    assert not target.is_symlink() and target.read_text() == "nameserver 192.0.2.1\n"
    assert host_file.read_text() == "host\n"


def test_pytest_gets_extra_arguments_before_the_selection() -> None:
    argv = sid.pytest_argv(("tests/memory",), ["-x", "-k", "release"])
    assert argv[:3] == ["/opt/venv/bin/python", "-m", "pytest"]
    assert argv[-4:] == ["-x", "-k", "release", "tests/memory"]
    assert "--ignore=tests/memory/test_liftout_attacks.py" in argv  # the servers' attacks: once


def test_unknown_options_go_to_pytest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[str, Path, bool]] = []
    monkeypatch.setattr(sid.os, "geteuid", lambda: 0)

    def fake_prepare_root(python: sid.Python, root: Path, refresh: bool, log: Path) -> None:
        seen.append((python.minor, root, refresh))
        raise sid.SetupFailed("stop here")

    monkeypatch.setattr(sid, "prepare_root", fake_prepare_root)
    assert sid.main(["--cache", str(tmp_path), "--refresh", "-x"]) == sid.SETUP_FAILED
    assert sid.main(["--python", "3.15", "--cache", str(tmp_path)]) == sid.SETUP_FAILED
    assert seen == [
        ("3.14", tmp_path / sid.root_name("sid", sid.Python("3.14").packages), True),
        ("3.15", tmp_path / sid.root_name("sid", sid.Python("3.15").packages), False),
    ]


def test_an_unknown_version_is_refused_with_the_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        sid.main(["--python", "3.13"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.replace("'", "")  # quoted by some versions of argparse
    assert "invalid choice: 3.13 (choose from 3.14, 3.15)" in err


def test_without_root_it_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sid.os, "geteuid", lambda: 1000)
    assert sid.main(["--python", "3.15", "--cache", str(tmp_path)]) == sid.SETUP_FAILED
    assert (
        capsys.readouterr().out
        == "py315: setup failed: needs root (debootstrap, mounts and chroot)\n"
    )
    assert not any(tmp_path.iterdir())


def test_a_root_is_made_again_when_missing_or_a_week_old(tmp_path: Path) -> None:
    ready = tmp_path / sid.READY
    assert sid.stale(ready, time.time())
    ready.write_text("python3.14 3.14.10-1\n")
    assert not sid.stale(ready, time.time())
    assert sid.stale(ready, time.time() + sid.MAX_AGE_SECONDS + 60)


def test_a_root_is_named_for_its_suite_and_packages() -> None:
    """Another suite or package list is another root: a cached one is never reused for it."""
    name = sid.root_name("sid", ("python3.14", "libjemalloc2"))
    assert name.startswith("rootfs-sid-")
    assert name == sid.root_name("sid", ("libjemalloc2", "python3.14"))
    assert name != sid.root_name("sid", ("python3.15", "libjemalloc2"))
    assert name != sid.root_name("trixie", ("python3.14", "libjemalloc2"))


def test_a_timeout_stops_pytest_and_what_it_started(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {child}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        sid.run_tests(["/bin/sh", "-c", script], timeout=1.0)
    pid = int(child.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel reaps an orphan through init, not at once
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"


@pytest.mark.parametrize("path", sid.TESTS)
def test_the_selection_names_test_files_that_exist(path: str) -> None:
    assert (REPO / path).exists()


def test_the_selection_covers_the_package_launcher_release_admission_and_lift_out() -> None:
    picked = [REPO / p for p in sid.TESTS]
    files = [f for p in picked for f in ([p] if p.is_file() else sorted(p.rglob("test_*.py")))]
    names = {f.relative_to(REPO).as_posix() for f in files}
    assert "tests/memory/test_liftout.py" in names
    assert "tests/memory/test_admission.py" in names
    assert "tests/app/test_launch.py" in names
    assert "tests/integration/test_server.py" in names
    assert "tests/integration/test_overload.py" in names  # admission in a real cgroup


def test_the_selection_needs_no_docker_engine() -> None:
    for path in sid.TESTS:
        root = REPO / path
        for file in [root] if root.is_file() else root.rglob("test_*.py"):
            assert "mark.container" not in file.read_text(), file


def test_wheel_tags_sorts_what_pip_installed_by_how_it_came() -> None:
    def item(name: str, filename: str) -> dict[str, object]:
        return {
            "metadata": {"name": name},
            "download_info": {"url": f"https://files.example/packages/{filename}"},
        }

    report = {
        "install": [
            item("psutil", "psutil-7.2.2-cp36-abi3-manylinux_2_17_x86_64.whl"),
            item("pydantic-core", "pydantic_core-2.50.5-cp314-cp314-manylinux_2_17_x86_64.whl"),
            item("h11", "h11-0.16.0-py3-none-any.whl"),
            item("oldpkg", "oldpkg-1.0.tar.gz"),
        ]
    }
    assert sid.wheel_tags(report) == {
        "abi3": ["psutil"],
        "cp314": ["pydantic-core"],
        "none": ["h11"],
        "sdist": ["oldpkg"],
    }


@pytest.mark.parametrize("minor", sid.PYTHONS)
def test_ci_runs_each_version_once_and_fails_when_it_fails(minor: str) -> None:
    tag = sid.Python(minor).tag
    text = (REPO / ".ci" / "run").read_text()
    commands = [line for line in text.splitlines() if not line.lstrip().startswith("#")]

    def where(command: str) -> list[int]:
        return [i for i, line in enumerate(commands) if command in line]

    (call,) = where(f"python3 -m lab.sid --python {minor} ")
    assert commands[call].startswith('CI="${CI:-true}"')  # the cgroup tests fail, never skip
    assert commands[call].endswith(f"|| {tag}=$?")  # a failure does not stop CI here...
    assert where("python3 -m lab.jemalloc")[0] < call < where("make test")[0]
    (check,) = where(f'[ "${tag}" = 0 ]')  # ...but fails it once `make test` has run
    assert check > where("make test")[0] and "exit 1" in commands[check]
    assert f"CPython {minor} tests failed" in commands[check]
