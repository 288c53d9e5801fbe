"""The package stands alone: what it imports, and that it names nothing of the app around it."""

from __future__ import annotations

import ast
import re
import sys

import app.memory
from app.memory import cleanup
from tests.memory.conftest import PACKAGE

ALLOWED = {"psutil", "prometheus_client", "starlette"}


def imported_roots() -> dict[str, set[str]]:
    """Module file -> top-level packages it imports absolutely."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        roots: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        found[path.name] = roots
    return found


def test_it_imports_itself_relatively_and_nothing_but_its_dependencies() -> None:
    for name, roots in imported_roots().items():
        foreign = roots - ALLOWED - set(sys.stdlib_module_names) - {"__future__"}
        assert not foreign, f"{name} imports {foreign}"


def test_it_names_nothing_of_this_service() -> None:
    """The only variables it names are its own cleanup settings (CleanupConfig.from_env), which
    this service reads under the same names."""
    own = {
        cleanup.ENABLED_VARIABLE,
        cleanup.INTERVAL_VARIABLE,
        cleanup.THRESHOLD_VARIABLE,
        cleanup.IDLE_VARIABLE,
    }
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        for word in ("Railway", "RAILWAY_", "/bulk", "/healthz", "app.memory"):
            assert word not in text, f"{path.name} names {word!r}"
        named = set(re.findall(r"MEMORY_[A-Z_]+", text))
        assert named <= own, f"{path.name} names {sorted(named - own)}"


def test_the_public_api_is_importable_by_name() -> None:
    for name in app.memory.__all__:
        assert getattr(app.memory, name) is not None
