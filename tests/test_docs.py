"""The docs name code that exists, and link to results that exist.

Every backticked span in docs/numerics.md, docs/design.md and README.md that looks like a
code name (a dotted name, a name with an underscore or a capital, a call, ``key=value``, a
file path, a CLI flag or ``eightbit <command> --flag``) must resolve: module attributes and
class members read from the source (AST, nothing imported), files in the repository, ONNX
op names, and the options of the click commands and benchmark scripts. Math symbols in
code style (``q_min``, ``s_i``, ``A``) are not code names by the rule below; the few spans
that look like code but are not ours (ONNX Runtime and PyTorch internals, C types) or are
math (``e_span``) are listed in ``ALLOWED``, each with why.

Every ``benchmarks/RESULTS.md#anchor`` link in the docs and in ``src/`` must name a heading
of benchmarks/RESULTS.md, so a figure moved out of a docstring stays findable.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "eightbit"
DOCS = [ROOT / "docs" / "numerics.md", ROOT / "docs" / "design.md", ROOT / "README.md"]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
# Folders a relative path in the docs may start from.
PATH_ROOTS = [ROOT, ROOT / "src", PACKAGE, *sorted(p for p in PACKAGE.iterdir() if p.is_dir())]

# Code names that are not eightbit's, or math symbols that look like code, and why the docs
# name them.
ALLOWED: dict[str, str] = {
    # Math symbols of the equations, in code style.
    "e_span": "a symbol of equation C.2.2 (the histogram's exponent)",
    "e_floor": "a symbol of equation C.2.2 (the histogram's exponent)",
    "t_prequant": "an example tensor name: `t` with the suffix to_qdq appends (§Q10)",
    "Fraction": "Python's fractions.Fraction, the exact rationals of the oracles",
    "ConvSym": "ONNX Runtime's MLAS kernel family for symmetric int8 convolution",
    # ONNX Runtime's contrib ops and internals (the kernels §1.9/§E reproduce).
    "QGemm": "ONNX Runtime contrib op (com.microsoft)",
    "ai.onnx": "ONNX's default operator domain (§Q10.1: Q/DQ nodes are read only there)",
    "com.microsoft": "ONNX Runtime's contrib operator domain (§Q10.1)",
    "block_size": "an attribute of ONNX's QuantizeLinear/DequantizeLinear (blocked scales)",
    "QLinearAdd": "ONNX Runtime contrib op (com.microsoft)",
    "DynamicQuantizeMatMul": "ONNX Runtime contrib op (com.microsoft): its fusion (§D.1)",
    "MatMulIntegerToFloat": "ONNX Runtime contrib op (com.microsoft): its fusion (§D.4)",
    "MatMulNBits": "ONNX Runtime contrib op (com.microsoft): block-quantized weights (§D.8)",
    "accuracy_level": "an attribute of ONNX Runtime's MatMulNBits (§D.8)",
    "QLinearConcat": "ONNX Runtime contrib op (com.microsoft)",
    "QLinearMul": "ONNX Runtime contrib op (com.microsoft)",
    "MlasRequantizeOutput": "ONNX Runtime's MLAS requantization routine (§1.8)",
    "QDQS8ToU8Transformer": "ONNX Runtime graph transformer (§1.9)",
    "qladd_avx2.cpp": "ONNX Runtime source file (§E.4)",
    "SessionOptions.optimized_model_filepath": "ONNX Runtime session option",
    "session.qdqisint8allowed": "ONNX Runtime session config key",
    "session.x64quantprecision": "ONNX Runtime session config key (§1.9)",
    "ORT_DISABLE_ALL": "ONNX Runtime graph optimization level",
    "ORT_ENABLE_EXTENDED": "ONNX Runtime graph optimization level",
    "intra_op_num_threads": "ONNX Runtime session option",
    "OPENBLAS_CORETYPE": "OpenBLAS environment variable (§E.12)",
    "OPENBLAS_CORETYPE=Haswell": "OpenBLAS environment variable (§E.12)",
    "SAME_UPPER": "ONNX auto_pad value",
    "auto_pad": "ONNX Conv/Pool attribute",
    "ceil_mode": "ONNX Pool attribute",
    "count_include_pad": "ONNX AveragePool attribute",
    "coordinate_transformation_mode": "ONNX Resize attribute",
    "nearest_mode": "ONNX Resize attribute",
    "doc_string": "ONNX proto field",
    "transA": "ONNX Gemm attribute",
    "transB": "ONNX Gemm attribute",
    'approximate="tanh"': "ONNX Gelu attribute",
    "quantize_static": "ONNX Runtime's quantizer entry point (a baseline)",
    "MovingAverageMinMaxObserver": "PyTorch observer that §C.1 compares with",
    "GreedyMemoryPlanner": "TFLite Micro's arena planner that §G.5 compares with",
    "mkldnn_convolution": "PyTorch kernel (§E.12)",
    "mkldnn_reorder_conv2d_weight": "PyTorch kernel (§E.12)",
    "MetricFcn": "NNCF's metric type that §R.7 compares with",
    "WeightBiasQuantization": "a C.2 reference to AIMET's step",
    "vpdpbusd": "x86 instruction (VNNI)",
    "vpmaddubsw": "x86 instruction (AVX2)",
    "uint64_t": "C type",
    "int64_t": "C type",
    "int32_t": "C type",
    "int8_t": "C type",
    "uint8_t": "C type",
    "matlab_display": "MATLAB's fi display that §1.7 mirrors",
    "sfix8_En7": "MATLAB fixed-point type name (§1.7)",
    "sfix8_En12": "MATLAB fixed-point type name (§1.7)",
    "sfix16_En15": "MATLAB fixed-point type name (§1.7)",
    "ufix16_E2": "MATLAB fixed-point type name (§1.7)",
    "features.10": "MobileNetV2 layer names in measurements",
    "features.14": "MobileNetV2 layer names in measurements",
    "features.15": "MobileNetV2 layer names in measurements",
    "features.16": "MobileNetV2 layer names in measurements",
    "shared/DESIGN.md": "the first design sketch, outside the repository; design.md lists "
    "where the code differs from it",
    "float/": "a prefix of tensor names in the comparison graph (§I.1), not a folder",
    "int8/": "a prefix of tensor names in the comparison graph (§I.1), not a folder",
    "cli.py": "named as what the code is not (design.md: cli is a package)",
    "out/demo/report.html": "what `make demo` writes (README)",
    # PyTorch's API, which the front end (numerics §T) reads and calls.
    "DataLoader": "torch.utils.data.DataLoader, data the PyTorch front end reads",
    "Dataset": "torch.utils.data.Dataset, data the PyTorch front end reads",
    "ExportedProgram": "torch.export.ExportedProgram, a model the PyTorch front end takes",
    "torch.onnx.export(..., dynamo=True)": "PyTorch's current ONNX exporter (§T.1)",
    "module.eval()": "PyTorch's eval mode, which the front end exports in (§T.1)",
    "dynamic_axes": "an argument of PyTorch's TorchScript exporter (§T.1)",
    "named_modules": "PyTorch's names of submodules, which export errors use (§T.1)",
    "nn_module_stack": "torch.export's node metadata naming the calling module (§T.1)",
    "adaptive_avg_pool2d(x, 1)": "PyTorch's global average pooling (§T.1)",
    "x.mean((2, 3))": "PyTorch's mean over the spatial axes (§T.1)",
    "keepdims=0": "an attribute of ONNX's ReduceMean (§T.1)",
}
# Dotted names whose first part is another library.
OTHER_LIBRARIES = ("np.", "math.", "torch.", "onnx.", "time.", "float32.")

IDENTIFIER = r"[A-Za-z_]\w*"
DOTTED = re.compile(rf"{IDENTIFIER}(?:\.{IDENTIFIER})*")
# Math in code style: one to four letters, optionally a short subscript (q_min, s_i, DQ_x).
MATH = re.compile(r"[A-Za-z]{1,4}\d?(?:_\w{1,3})?'?")
PATH = re.compile(r"[\w./<>-]+(?:\.(?:py|h|c|cpp|md|html)|/)")


@dataclass
class Scope:
    """A module or class: the names it defines or imports, and its literal constants."""

    names: set[str] = field(default_factory=set)
    constants: dict[str, object] = field(default_factory=dict)


@dataclass
class CodeIndex:
    modules: dict[str, Scope]  # "eightbit.fixed.scaling" -> its scope
    classes: dict[str, list[Scope]]  # class name -> scopes of classes so named
    defined: set[str]  # every def, class, assignment, member, parameter and field name
    c_words: set[str]  # identifiers in the C runtime and the C the emitters write
    c_strings: set[str]  # string constants of the C generator (file names it writes)
    cli_options: dict[str, set[str]]  # subcommand -> its flags
    script_flags: set[str]  # the flags of the benchmark and MCU scripts (argparse)


def _targets(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Assign):
        return [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _scope_of(body: list[ast.stmt]) -> Scope:
    scope = Scope()
    for node in body:
        names: list[str] = _targets(node)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, ast.If | ast.Try):  # TYPE_CHECKING imports, fallbacks
            inner = _scope_of(node.body)
            names = sorted(inner.names)
        scope.names.update(names)
        value = getattr(node, "value", None)
        if len(_targets(node)) == 1 and value is not None:
            with contextlib.suppress(ValueError):
                scope.constants[_targets(node)[0]] = ast.literal_eval(value)
    return scope


def _index_module(tree: ast.Module, qualname: str, index: CodeIndex) -> None:
    index.modules[qualname] = _scope_of(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            members = _scope_of(node.body)
            index.classes.setdefault(node.name, []).append(members)
            index.defined |= members.names | {node.name}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            index.defined |= {node.name} | {a.arg for a in arguments}
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            index.defined.update(_targets(node))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and qualname.startswith("eightbit.codegen")  # the C the emitters write
        ):
            index.c_words.update(re.findall(IDENTIFIER, node.value))
            index.c_strings.add(node.value)


def _cli_options() -> dict[str, set[str]]:
    from eightbit.cli import _COMMANDS

    options: dict[str, set[str]] = {}
    for name, (module, attribute) in _COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        flags = {flag for param in command.params for flag in param.opts + param.secondary_opts}
        options[name] = {flag for flag in flags if flag.startswith("--")}
    return options


@cache
def code_index() -> CodeIndex:
    index = CodeIndex({}, {}, set(), set(), set(), _cli_options(), set())
    # The package, and the benchmarks, MCU checks and test models the docs name too.
    sources = [
        *PACKAGE.rglob("*.py"),
        # not benchmarks/_work: the bench's downloads and the AIMET venv live there
        *(p for p in (ROOT / "benchmarks").rglob("*.py") if "_work" not in p.parts),
        *(ROOT / "mcu").rglob("*.py"),
        *(ROOT / "tests" / "fixtures").rglob("*.py"),  # the test models numerics names
    ]
    for path in sorted(sources):
        base = PACKAGE.parent if path.is_relative_to(PACKAGE) else ROOT
        parts = path.relative_to(base).with_suffix("").parts
        qualname = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        _index_module(tree, qualname, index)
        if not path.is_relative_to(PACKAGE):
            index.script_flags |= {
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant)
                and re.fullmatch(r"--[a-z][\w-]*", str(node.value))
            }
        index.defined.add(parts[-1])
    for module in list(index.modules):  # a package's submodules are its attributes
        parent, _, child = module.rpartition(".")
        if parent in index.modules:
            index.modules[parent].names.add(child)
    index.c_words.update(re.findall(IDENTIFIER, (PACKAGE / "codegen" / "runtime.h").read_text()))
    return index


@cache
def onnx_ops() -> frozenset[str]:
    return frozenset(schema.name for schema in onnx.defs.get_all_schemas_with_history())


def _scopes_named(part: str, index: CodeIndex) -> list[Scope]:
    modules = [s for name, s in index.modules.items() if name.split(".")[-1] == part]
    if part == "eightbit":
        modules.append(index.modules["eightbit"])
    return modules + index.classes.get(part, [])


def _resolve_dotted(name: str, index: CodeIndex) -> bool:
    """``a.b.c``: some module or class named ``a`` has ``b``, some scope named ``b`` has ``c``.

    A module is named by its last part (``scaling`` or ``eightbit.fixed.scaling``'s parts
    in turn); following ``b`` to every scope so named stands in for following imports."""
    scopes = _scopes_named(name.split(".")[0], index)
    *middle, last = name.split(".")[1:]
    for part in middle:
        scopes = [inner for s in scopes if part in s.names for inner in _scopes_named(part, index)]
    return any(last in scope.names for scope in scopes)


def _resolve_path(path: str, index: CodeIndex) -> bool:
    if "<" in path or path.startswith("NAME"):
        return True  # a template: engine/kernels/<family>.py, NAME_io.c
    if path in index.c_strings:
        return True  # a file the C generator writes (eightbit_runtime.h)
    return any((base / path.rstrip("/")).exists() for base in PATH_ROOTS)


def _check_cli(span: str, index: CodeIndex) -> str | None:
    words = span.split()
    command = None
    if words[0] == "eightbit" and not words[1].startswith("--"):
        command, words = words[1], words[2:]
        if command not in index.cli_options:
            return f"no subcommand {command!r}"
    known = {"--help"} | (
        index.cli_options[command]
        if command
        else set().union(*index.cli_options.values(), index.script_flags)
    )
    for word in words:
        if word.startswith("--") and word not in known:
            return f"no option {word}" + (f" in 'eightbit {command}'" if command else "")
    return None


def _check_name(name: str, index: CodeIndex) -> str | None:
    """Why ``name`` (an identifier or dotted name) does not resolve, or None."""
    if name.startswith(OTHER_LIBRARIES) or name in onnx_ops():
        return None
    if "." in name:
        return None if _resolve_dotted(name, index) else "not found in the package"
    if name in index.defined or name in index.modules or name in index.c_words:
        return None
    if name.startswith("NAME_") and name[4:] in index.c_words:
        return None  # a C name the generator prefixes with the model's name
    return "not defined anywhere in the package"


def _check_call(span: str, index: CodeIndex) -> str | None:
    """``f(key=value, ...)``: ``f`` resolves and each keyword is some parameter or field."""
    try:
        call = ast.parse(span.replace("…", "...").replace("...,", ""), mode="eval").body
    except SyntaxError:
        return None  # math written with parentheses
    if not isinstance(call, ast.Call) or not DOTTED.fullmatch(ast.unparse(call.func)):
        return None
    if MATH.fullmatch(ast.unparse(call.func)):
        return None  # Q(v), P(k), O(n): math
    problem = _check_name(ast.unparse(call.func), index)
    if problem:
        return problem
    for keyword in call.keywords:
        if keyword.arg and keyword.arg not in index.defined:
            return f"no parameter or field {keyword.arg!r}"
    return None


def problem_with(span: str, index: CodeIndex) -> str | None:
    """Why the code span ``span`` names nothing that exists, or None (also for non-code)."""
    span = span.strip()
    if span in ALLOWED:
        return None
    if span.startswith("--") or span.startswith("eightbit "):
        return _check_cli(span, index)
    if PATH.fullmatch(span) and re.search(r"\.(py|h|c|cpp|md|html)$|/$", span):
        return None if _resolve_path(span, index) else "no such file in the repository"
    keyword = re.fullmatch(rf"({IDENTIFIER})=(\S+)", span)
    if keyword:  # key=value as code writes it (math puts spaces around '=')
        return None if keyword[1] in index.defined else f"no parameter or field {keyword[1]!r}"
    constant = re.fullmatch(r"([A-Z][A-Z0-9_]+) = (.+)", span)
    if constant and not MATH.fullmatch(constant[1]):
        return _check_constant(constant[1], constant[2], index)
    if re.fullmatch(rf"{DOTTED.pattern}\(.*\)", span):
        return _check_call(span, index)
    if not DOTTED.fullmatch(span):
        return None
    if "." not in span and (MATH.fullmatch(span) or not _looks_like_code(span)):
        return None
    return _check_name(span, index)


def _looks_like_code(name: str) -> bool:
    """A name with an underscore, or capitalized (``QuantPlan``, ``Conv``): lowercase words
    (``minmax``, ``rint``) may be prose or math as well as code, so they are not checked."""
    return "_" in name or bool(re.fullmatch(r"[A-Z]\w*[a-z]\w*", name))


def _check_constant(name: str, value: str, index: CodeIndex) -> str | None:
    """``NAME = value``: the constant exists and, where it is a literal, has that value."""
    found = [scope.constants[name] for scope in index.modules.values() if name in scope.constants]
    if not found:
        return None if name in index.defined else "not defined anywhere in the package"
    try:
        written = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None
    return None if written in found else f"the code says {name} = {found[0]!r}"


def code_spans(path: Path) -> Iterator[tuple[int, str]]:
    """(line, span) of each inline code span outside fenced blocks."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span


def stale_names(path: Path) -> list[str]:
    index = code_index()
    found = []
    for line, span in code_spans(path):
        problem = problem_with(span, index)
        if problem:
            found.append(f"{path.relative_to(ROOT)}:{line}: `{span}`: {problem}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_code_name_in_the_docs_exists(doc: Path) -> None:
    stale = stale_names(doc)
    assert not stale, "rename or drop these (or list a name not ours in ALLOWED):\n" + "\n".join(
        stale
    )


@pytest.mark.parametrize(
    "span",
    [
        "OutputStats",  # numerics §A.1 named it; it never existed
        "eightbit.analysis.metrics.OutputStats",
        "presets.PRESET",
        "Ranges.unload",
        "make_plan(separate_joint=True)",
        "tests/engine/test_nothing.py",
        "--fastest",
        "eightbit quantize --no-such-flag",
        "eightbit quantise",
        "JOIN_RATIO = 17",
        "QLinearConvolution",  # neither ours nor an ONNX op
    ],
)
def test_a_stale_name_is_caught(span: str) -> None:
    assert problem_with(span, code_index()) is not None


@pytest.mark.parametrize(
    "span",
    [
        "presets.PRESETS",
        "eightbit.fixed.scaling.round_shift_right",
        "Ranges.load",
        "kernels.requantize.Rescale",
        "make_plan(separate_joins=True)",
        "engine/kernels/__init__.py",
        "eightbit quantize --ranges",
        "--preset",
        "JOIN_RATIO = 16",
        "q_min",  # math
        "QLinearConv",  # an ONNX op
    ],
)
def test_a_real_name_passes(span: str) -> None:
    assert problem_with(span, code_index()) is None


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def results_links() -> Iterator[tuple[str, str]]:
    """(where, anchor) of each benchmarks/RESULTS.md#anchor in the docs and the package."""
    sources = [*DOCS, *sorted(PACKAGE.rglob("*.py"))]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"RESULTS\.md#([\w-]+)", text):
            line = text.count("\n", 0, match.start()) + 1
            yield f"{path.relative_to(ROOT)}:{line}", match[1]


def test_results_links_name_a_heading() -> None:
    headings = re.findall(r"^#+ (.+)$", RESULTS.read_text(encoding="utf-8"), flags=re.M)
    anchors = {heading_anchor(h) for h in headings}
    broken = [f"{where}: #{anchor}" for where, anchor in results_links() if anchor not in anchors]
    assert not broken, "no such heading in benchmarks/RESULTS.md:\n" + "\n".join(broken)


def test_heading_anchors_follow_github() -> None:
    title = "Improvement steps on MobileNetV2 (400 evaluation crops): presets vs NNCF"
    assert heading_anchor(title) == (
        "improvement-steps-on-mobilenetv2-400-evaluation-crops-presets-vs-nncf"
    )
