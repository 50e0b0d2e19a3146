"""The one rule of docs/design.md: a package imports only packages in layers below its own."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SOURCE / "eightbit"

# docs/design.md, "Layers, bottom to top". Top-level modules count as packages.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "__version__"),
    ("_io", "_memo", "validators", "serialize"),
    ("fixed", "graph", "steps"),
    ("ops", "calibrate"),
    ("quant", "pytorch"),
    ("plan", "qdq"),
    ("export",),
    ("engine",),
    ("codegen", "analysis"),
    ("improve", "safety_net"),
    ("rebuild", "report", "distributed"),
    ("pipeline",),
    ("cli",),
    ("__main__",),
)
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path, source: Path) -> str:
    return ".".join(path.relative_to(source).with_suffix("").parts).removesuffix(".__init__")


def _imported(module: str, path: Path, tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, absolute module or eightbit attribute) of every eightbit import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("eightbit"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                keep = len(package) - node.level + (path.name == "__init__.py")
                base = ".".join(package[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base == "eightbit":  # from eightbit import x: x is the package imported
                for alias in node.names:
                    yield node.lineno, f"eightbit.{alias.name}"
            elif base.startswith("eightbit."):
                yield node.lineno, base


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(root: Path = PACKAGE) -> list[str]:
    """Every import of a package at or above the importer's layer, as 'file:line: a -> b'."""
    found = []
    source = root.parent
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, source)
        importer = _package(module)
        if importer is None:  # the package root re-exports lazily
            continue
        for line, target in _imported(module, path, ast.parse(path.read_text(), str(path))):
            imported = _package(target)
            if imported is None or imported == importer:
                continue
            if imported not in LAYER or importer not in LAYER:
                found.append(f"{path}:{line}: {importer} or {imported} is in no layer")
            elif LAYER[imported] >= LAYER[importer]:
                found.append(f"{path.relative_to(source)}:{line}: {importer} imports {target}")
    return found


def test_every_package_imports_only_packages_below_it() -> None:
    assert upward_imports() == [], "docs/design.md: a package imports only layers below it"


def test_every_package_has_a_layer() -> None:
    packages = {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert packages - set(LAYER) == set()


def test_an_upward_import_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "eightbit"
    (root / "plan").mkdir(parents=True)
    (root / "plan" / "__init__.py").write_text("x = 1\n\nfrom eightbit.improve.presets import A\n")
    (root / "ops").mkdir()
    (root / "ops" / "spec.py").write_text("from ..quant import QuantConfig\n")  # same layer up
    assert upward_imports(root) == [
        "eightbit/ops/spec.py:1: ops imports eightbit.quant",
        "eightbit/plan/__init__.py:3: plan imports eightbit.improve.presets",
    ]
