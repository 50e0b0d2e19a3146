"""Tests share code through helper modules (helpers.py, reference.py, fixtures/, ...), never
by importing a ``test_*`` module: pytest would collect that module's tests a second time in
the importer's namespace, and editing one test file would silently change another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imports_of_test_modules(path: Path) -> list[str]:
    """``line: module`` for each import in ``path`` of a module whose name starts with test_."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        # `from tests.x import test_y` imports a test module too: check every dotted part.
        if any(
            name.startswith("tests.") and part.startswith("test_")
            for name in names
            for part in name.split(".")
        ):
            found.append(f"{path.relative_to(TESTS.parent)}:{node.lineno}: {names[0]}")
    return found


def test_no_test_module_imports_another() -> None:
    offenders = [
        hit for path in sorted(TESTS.rglob("*.py")) for hit in imports_of_test_modules(path)
    ]
    assert not offenders, "move the shared code into a helpers module:\n" + "\n".join(offenders)
