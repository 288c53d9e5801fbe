"""lab.py312: which interpreter it picks, when it remakes the venv, and that a missing 3.12 fails.

The whole path (a venv of pyenv's 3.12 and the selection's tests) takes minutes; CI runs it from
.ci/run. These tests check the parts that decide what that run does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import py312, sid


def interpreter(root: Path, version: str) -> Path:
    binary = root / "versions" / version / "bin" / f"python{version.rsplit('.', 1)[0]}"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    return binary


def test_the_newest_final_3_12_is_picked(tmp_path: Path) -> None:
    interpreter(tmp_path, "3.12.1")
    newest = interpreter(tmp_path, "3.12.10")
    interpreter(tmp_path, "3.11.7")
    interpreter(tmp_path, "3.13.0")
    (tmp_path / "versions" / "3.12-dev" / "bin").mkdir(parents=True)
    assert py312.find_interpreter(tmp_path) == newest


def test_no_3_12_is_none(tmp_path: Path) -> None:
    interpreter(tmp_path, "3.11.7")
    assert py312.find_interpreter(tmp_path) is None
    assert py312.find_interpreter(tmp_path / "absent") is None


def test_another_minor_is_picked_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    interpreter(tmp_path, "3.12.10")
    newest = interpreter(tmp_path, "3.13.2")
    interpreter(tmp_path, "3.13.0")
    assert py312.find_interpreter(tmp_path, "3.13") == newest
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "empty"))
    assert py312.main(["--minor", "3.13", "--venv-only"]) == py312.SETUP_FAILED
    assert "py313: setup failed: no CPython 3.13 under" in capsys.readouterr().out


def test_pyenv_root_follows_its_variable(tmp_path: Path) -> None:
    assert py312.pyenv_root({"PYENV_ROOT": str(tmp_path)}) == tmp_path
    assert py312.pyenv_root({}) == Path.home() / ".pyenv"


def test_a_machine_without_3_12_fails_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    assert py312.main(["--cache", str(tmp_path / "cache")]) == py312.SETUP_FAILED
    assert "no CPython 3.12 under" in capsys.readouterr().out


def test_the_venv_is_kept_while_lock_and_interpreter_stay(tmp_path: Path) -> None:
    lock = tmp_path / "requirements-dev.lock"
    lock.write_text("# nothing pinned\n")
    venv = tmp_path / "venv"
    venv.mkdir()
    binary = Path("/nonexistent/python3.12")  # would fail if the venv were made again
    (venv / ".lock-sha256").write_text(f"{sid.lock_digest(lock)} {binary}\n")
    py312.prepare_venv(binary, venv, lock, tmp_path / "setup.log")  # no rebuild, no error
    lock.write_text("changed==1\n")
    with pytest.raises(OSError):
        py312.prepare_venv(binary, venv, lock, tmp_path / "setup.log")
