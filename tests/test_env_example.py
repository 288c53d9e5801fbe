""".env.example documents every setting once, and copied as-is it is a valid configuration."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from app.config import ConfigError, Settings, load, load_settings
from app.workload.settings import BulkSettings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / ".env.example"


def documented() -> list[str]:
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", EXAMPLE.read_text(), re.M)


def test_every_setting_is_documented_once() -> None:
    names = documented()
    assert sorted(names) == sorted(set(names)), "a variable is listed twice"
    fields = [*Settings.model_fields, *BulkSettings.model_fields]
    assert set(names) == {field.upper() for field in fields}


def test_every_variable_has_a_line_of_meaning() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            assert index and lines[index - 1].startswith("# "), f"{line} has no comment above it"


def test_copied_example_loads_with_the_documented_defaults(tmp_path, monkeypatch) -> None:
    for name in documented():
        monkeypatch.delenv(name, raising=False)
    shutil.copy(EXAMPLE, tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    loaded = [(load_settings(), Settings.model_construct())]
    loaded.append((load(BulkSettings), BulkSettings.model_construct()))
    for name in documented():
        field = name.lower()
        settings, defaults = next(pair for pair in loaded if field in type(pair[0]).model_fields)
        assert getattr(settings, field) == getattr(defaults, field), name


@pytest.mark.parametrize("line", ["MEMORY_CLEANUP_INTERVAL=abc", "MEMORY_CLEANUP_INTERVAL=0"])
def test_a_bad_value_in_dotenv_names_the_variable(tmp_path, monkeypatch, line) -> None:
    monkeypatch.delenv("MEMORY_CLEANUP_INTERVAL", raising=False)
    (tmp_path / ".env").write_text(line + "\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("configuration error: MEMORY_CLEANUP_INTERVAL=")
