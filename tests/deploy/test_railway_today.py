"""What the Railway files say and hold as of 2026-12-01, the Config as Code cutoff.

Railway's docs (content/docs/config-as-code.md, infrastructure-as-code.md) give 2026-12-01 as
the day railway.toml / railway.json stop being read; the CLI finds the first of
.railway/railway.ts, railway.py, railway.go (src/iac/engine.rs, find_authoring_file). The CLI
looks for a railway.toml or railway.json in the directory it runs in and every parent, warns
about it on every command (src/util/cac_deprecation.rs, find_cac_file) and offers to migrate it
into a .railway/railway.ts (src/commands/config/migrate.rs): so none sits where a fork runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEGACY_DIR = REPO / "railway" / "legacy"
CAC_FILES = sorted(LEGACY_DIR.glob("*.toml"))


@pytest.mark.parametrize("path", CAC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_config_as_code_files_say_they_are_legacy_and_when_reading_stopped(path: Path) -> None:
    head = path.read_text().split("\n\n", 1)[0]
    assert "LEGACY" in head and "2026-12-01" in head and ".railway/railway.py" in head


def test_there_are_config_as_code_files_to_check() -> None:
    assert len(CAC_FILES) >= 4


def test_railway_py_is_the_file_the_cli_finds() -> None:
    """railway.ts would win over railway.py (`railway config migrate --apply` writes one)."""
    assert (REPO / ".railway" / "railway.py").is_file()
    assert not (REPO / ".railway" / "railway.ts").exists()
    assert not (REPO / ".railway" / "railway.go").exists()


@pytest.mark.parametrize("name", ["railway.toml", "railway.json"])
def test_no_config_as_code_file_where_the_cli_or_railway_would_find_it(name: str) -> None:
    """Not at the root (Railway reads a root file by itself) nor in a folder a fork runs the CLI
    from; the legacy files are read only through a service's Railway Config File setting."""
    assert not (REPO / name).exists()
    assert not (REPO / ".railway" / name).exists()
    assert not (LEGACY_DIR / "railway.json").exists()  # one form: a second would be a second truth


def test_no_config_as_code_file_outside_the_legacy_folder() -> None:
    found = {p for p in REPO.rglob("*") if p.name in ("railway.toml", "railway.json")}
    tools = (".venv", ".cache", ".git")  # not the repository's own files
    found = {p for p in found if not p.relative_to(REPO).parts[0].startswith(tools)}
    assert found == {LEGACY_DIR / "railway.toml"}


@pytest.mark.parametrize("path", CAC_FILES, ids=lambda p: p.name)
def test_each_legacy_file_names_its_own_railway_config_file_path(path: Path) -> None:
    """The absolute repository path a service deployed before the cutoff sets to keep using it."""
    assert f"/railway/legacy/{path.name}" in path.read_text()
