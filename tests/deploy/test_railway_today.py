"""What the Railway files say and hold as of 2026-12-01, the Config as Code cutoff.

Railway's docs (content/docs/config-as-code.md, infrastructure-as-code.md) give 2026-12-01 as
the day railway.toml / railway.json stop being read; the CLI finds the first of
.railway/railway.ts, railway.py, railway.go (src/iac/engine.rs, find_authoring_file).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CAC_FILES = sorted([REPO / "railway.toml", *(REPO / "railway").glob("*.toml")])


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


def test_no_railway_json_beside_the_toml() -> None:
    """Railway reads one Config as Code file; a second form would be a second truth."""
    assert not (REPO / "railway.json").exists()
