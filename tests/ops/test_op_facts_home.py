"""Op facts live in ``ops/``: outside it, no module compares an ``op_type`` to a string
literal or holds a collection of op-type names (docs/design.md, "Adding an operator family").

The steps, the QDQ writer and the analyses ask the op's ``OpSpec`` instead
(``lookup(op_type).is_layer``, ``.weight_layout``, ``.clamp``, ...), so that a new op family
is one file in ``ops/`` plus its kernel and its C emitter. The scan reads the source (AST);
its message names the file and line of each violation.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import onnx.defs

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "eightbit"

# Where op types are named by nature: the facts themselves, graph rewrites about particular
# ops (BatchNormalization folding, patterns, pads, stems; `graph` sits below `ops`, so it
# cannot ask the registry), and the per-family integer kernels and C emitters.
ALLOWED = ("ops", "graph", "engine/kernels", "codegen/emit")
# The QDQ format's own nodes: every reader of a QDQ model recognises them, and they are not
# an op family that is quantized (no OpSpec describes them).
FORMAT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
# Modules that name another tool's ops, each with why.
EXEMPT = {
    "analysis/ort_kernels.py": "lists ONNX Runtime's own fused kernels (QGemm, MatMulInteger, "
    "...) and shape reads in the graph ONNX Runtime optimized, not eightbit's op families",
    "pytorch/onnx_ops.py": "the ONNX-to-torch converter's kernel table: every ONNX op it runs, "
    "float ops included, mapped to a torch function (as engine/kernels maps the int8 ones)",
    "pytorch/onnx_windows.py": "the converter's kernels of the windowed ONNX ops (Conv, pools, "
    "Resize), part of the same table",
}
OP_TYPES = frozenset(
    schema.name for schema in onnx.defs.get_all_schemas_with_history() if schema.domain == ""
)


_CONSTRUCTORS = ("frozenset", "set", "tuple", "list")


def _names_op_type(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "op_type") or (
        isinstance(node, ast.Name) and node.id == "op_type"
    )


def _strings(node: ast.expr) -> list[str]:
    """The string literals of ``node``: a constant, or a literal tuple/list/set of them,
    also when wrapped in frozenset(...)/set(...)/tuple(...)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1:
        return _strings(node.args[0]) if node.func.id in _CONSTRUCTORS else []
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for element in node.elts for s in _strings(element)]
    return []


def _op_names(node: ast.expr) -> list[str]:
    """Op-type names (not format ops) a literal collection holds, as elements or dict keys."""
    if isinstance(node, ast.Dict):
        held = [s for key in node.keys if key is not None for s in _strings(key)]
        held += [s for value in node.values for s in _strings(value)]
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        held = _strings(node)
    else:
        return []
    return sorted({name for name in held if name in OP_TYPES and name not in FORMAT_OPS})


def violations_in(source: str, where: str) -> Iterator[str]:
    """'where:line: what' for each op-type comparison or op-type collection in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_names_op_type(operand) for operand in operands):
                literals = [s for operand in operands for s in _strings(operand)]
                literals = [s for s in literals if s not in FORMAT_OPS]
                if literals:
                    yield f"{where}:{node.lineno}: compares op_type to {literals}"
        elif isinstance(node, ast.Match) and _names_op_type(node.subject):
            yield f"{where}:{node.lineno}: matches op_type against literals"
        elif isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict):
            names = _op_names(node)
            if names:
                yield f"{where}:{node.lineno}: holds op-type names {names}"


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def scanned_files() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = _relative(path)
        if any(relative.startswith(f"{allowed}/") for allowed in ALLOWED):
            continue
        if relative not in EXEMPT:
            yield path


def test_no_op_type_list_or_comparison_outside_ops() -> None:
    found = [
        violation
        for path in scanned_files()
        for violation in violations_in(path.read_text(), f"src/eightbit/{_relative(path)}")
    ]
    assert not found, (
        "op facts outside eightbit.ops; declare them in the op's OpSpec (ops/<family>.py) and "
        "look them up with ops.lookup(op_type):\n" + "\n".join(found)
    )


def test_the_scan_sees_the_steps_and_the_writer() -> None:
    scanned = {_relative(path) for path in scanned_files()}
    assert {"export/qdq.py", "improve/refine.py", "improve/weights/equalize.py"} <= scanned
    assert "ops/spec.py" not in scanned and "engine/kernels/activation.py" not in scanned


def test_the_scan_finds_each_kind_of_violation() -> None:
    source = "\n".join(
        [
            'if node.op_type == "Conv": pass',
            'if op_type in ("Relu", "Clip"): pass',
            'if node.op_type not in frozenset({"Foo"}): pass',
            'LAYERS = frozenset({"Conv", "Gemm"})',
            'PORTS = {"Conv": 1}',
            "match node.op_type:\n    case 'Gemm': pass",
        ]
    )
    lines = sorted(int(v.split(":")[1]) for v in violations_in(source, "planted.py"))
    assert lines == [1, 2, 2, 3, 4, 5, 6]  # line 2: the comparison, and the tuple it holds


def test_the_scan_leaves_the_format_and_node_building_alone() -> None:
    source = "\n".join(
        [
            'if node.op_type == "DequantizeLinear": pass',
            'QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})',
            'helper.make_node("Sub", [a, b], [c])',
            'CANDIDATES = (("minmax", None), ("mse", None))',
            'if node.name == "Conv": pass',
        ]
    )
    assert list(violations_in(source, "fine.py")) == []
