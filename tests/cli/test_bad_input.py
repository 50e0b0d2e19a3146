"""Bad input over every subcommand: one ``error:`` line, exit 2, nothing lost (issue 14).

Each case runs the CLI in-process on a shared workspace of inputs (the demo model quantized
once per session) and checks: the exit status; stderr is exactly one ``error:`` line with
no traceback and no Python warning; every input's sha256 is unchanged; and the output
folder holds nothing new (no output, no temporary file). Cases named ``d<N>`` are the
defects of issue 14 (each failed on the code before it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from eightbit.cli import main
from tests.cli.conftest import Workspace

Args = Callable[[Workspace, Path], list[str]]


@dataclass(frozen=True)
class Case:
    name: str
    args: Args
    message: str  # a part of the one error line
    absent: tuple[str, ...] = ()  # must not be in the error line
    obstacles: tuple[str, ...] = ()  # folders made in the output folder first
    files: tuple[str, ...] = ()  # files made in the output folder first
    code: int = 2
    extra: dict[str, str] = field(default_factory=dict)


def _m(ws: Workspace) -> str:
    return str(ws / "mnist_cnn.onnx")


def _q(ws: Workspace) -> str:
    return str(ws / "q.onnx")


def _d(ws: Workspace) -> str:
    return str(ws / "test.npz")


def _validate(data: str, *extra: str) -> Args:
    return lambda ws, out: ["validate", _m(ws), _q(ws), "-d", str(ws / data), "--no-layers", *extra]


def _report(data: str, *extra: str) -> Args:
    return lambda ws, out: [
        "report", _m(ws), _q(ws), "-d", str(ws / data), "-o", str(out / "r.html"), *extra
    ]  # fmt: skip


def _run(data: str, *extra: str, model: str = "q.onnx") -> Args:
    return lambda ws, out: ["run", str(ws / model), "-d", str(ws / data), "-o", str(out / "o.npz"), *extra]  # fmt: skip


def _quantize(data: str, *extra: str, model: str = "mnist_cnn.onnx") -> Args:
    return lambda ws, out: [
        "quantize", str(ws / model), "-d", str(ws / data), "-o", str(out / "q3.onnx"),
        "--preset", "fast", *extra,
    ]  # fmt: skip


def _calibrate(data: str, *extra: str, model: str = "mnist_cnn.onnx") -> Args:
    return lambda ws, out: [
        "calibrate", str(ws / model), "-d", str(ws / data), "-o", str(out / "r.json"), *extra
    ]  # fmt: skip


def _codegen(model: str, *extra: str) -> Args:
    return lambda ws, out: ["codegen", str(ws / model), "-o", str(out / "c"), *extra]


NOT_SKIP = ("--skip-nonfinite (",)  # the advice may name calibrate's option, not offer it here

CASES = [
    # Missing, empty, truncated and random models.
    *[
        Case(f"missing model: {name}", args, "does not exist")
        for name, args in [
            ("calibrate", _calibrate("test.npz", model="none.onnx")),
            ("quantize", _quantize("test.npz", model="none.onnx")),
            ("run", _run("test.npz", model="none.onnx")),  # d14
            ("codegen", _codegen("none.onnx")),  # d14
            ("validate", lambda ws, out: ["validate", "none.onnx", _q(ws), "-d", _d(ws)]),
            ("report", lambda ws, out: ["report", _m(ws), "none.onnx", "-d", _d(ws), "-o", "r"]),
        ]
    ],
    *[
        Case(f"d14 {broken} model: {command}", args, broken.split(".")[0], absent=("no plan",))
        for broken in ("empty.onnx", "truncated.onnx", "random.onnx")
        for command, args in [
            ("run", _run("test.npz", model=broken)),
            ("codegen", _codegen(broken)),
        ]
    ],
    Case("truncated model: quantize", _quantize("test.npz", model="truncated.onnx"), "truncated"),
    # Data: missing, wrong name, shape, NaN, empty, constant, huge, corrupt images.
    Case("missing data: quantize", _quantize("none.npz"), "does not exist"),
    Case("wrong shape: validate", _validate("wrong_shape.npy"), "shape"),
    Case("corrupt image: calibrate", _calibrate("corrupt_images", "--channels", "gray"), "a.png"),
    *[
        Case(f"d9 NaN advice: {command}", args, "NaN", absent=NOT_SKIP)
        for command, args in [
            ("quantize", _quantize("nan.npy")),
            ("validate", _validate("nan.npy")),
            ("report", _report("nan.npy")),
            ("run", _run("nan.npy")),
        ]
    ],
    Case("NaN: calibrate offers --skip-nonfinite", _calibrate("nan.npy"), "--skip-nonfinite"),
    Case("d10 zero samples: run", _run("empty.npy"), "no samples"),
    Case("zero samples: quantize", _quantize("empty.npy"), "sample"),
    Case("d8 constant data: quantize", _quantize("constant.npy"), "identical"),
    Case("d8 constant data: calibrate", _calibrate("constant.npy"), "identical"),
    Case("d11 float64 beyond float32: quantize", _quantize("huge.npy"), "float32's range"),
    Case(
        "d11 ranges beyond float32 name the tensor",
        lambda ws, out: ["quantize", _m(ws), "--ranges", str(ws / "huge_ranges.json"), "-o", str(out / "q.onnx")],  # fmt: skip
        "tensor '",
    ),
    # Labels.
    Case("d7 labels 99 for 10 classes: validate", _validate("test.npz", "--labels", "__labels_99.npy"), "10 classes"),  # fmt: skip
    Case("d7 labels -1: validate", _validate("test.npz", "--labels", "__labels_minus1.npy"), "10 classes"),  # fmt: skip
    Case("d7 labels 99: report", _report("test.npz", "--labels", "__labels_99.npy"), "10 classes"),
    Case("label count: validate", _validate("test.npz", "--labels", "__test.npz"), "labels"),
    # Option values.
    Case("d15 --top -5", _calibrate("test.npz", "--top", "-5"), "--top"),
    Case("d16 --image-size abc", _run("test.npz", "--image-size", "abc"), "224", absent=("0.485",)),  # fmt: skip
    Case("--batch-size 0: validate", _validate("test.npz", "--batch-size", "0"), "--batch-size"),
    Case("--method bad: quantize", _quantize("test.npz", "--method", "bad"), "--method"),
    Case("unknown option: run", _run("test.npz", "--bogus"), "--bogus"),
    # Plans.
    *[
        Case(f"d4 binary plan: {command}", args, "not a text file")
        for command, args in [
            ("report", _report("test.npz", "--plan", "__binary.plan.json")),
            ("run", _run("test.npz", "--plan", "__binary.plan.json")),
            ("codegen", _codegen("q.onnx", "--plan", "__binary.plan.json")),
        ]
    ],
    Case("d6 another model's plan: report", _report("test.npz", "--plan", "__other_q.plan.json"), "plan does not belong"),  # fmt: skip
    Case("another model's plan: run", _run("test.npz", "--plan", "__other_q.plan.json"), "plan"),
    Case(
        "d17 codegen of a float node gives no 'exclude' advice",
        _codegen("other_q.onnx"),
        "Softmax",
        absent=("'exclude'",),
    ),
    # d1: outputs onto inputs (after links and '..').
    *[
        Case(f"d1 output onto input: {name}", args, "is the input file")
        for name, args in [
            ("report -o its plan", lambda ws, out: ["report", _m(ws), _q(ws), "-d", _d(ws), "-o", str(ws / "q.plan.json")]),  # fmt: skip
            ("report --plan p -o p", lambda ws, out: ["report", _m(ws), _q(ws), "-d", _d(ws), "--plan", str(ws / "p.json"), "-o", str(ws / "p.json")]),  # fmt: skip
            ("report -o its labels", lambda ws, out: ["report", _m(ws), _q(ws), "-d", _d(ws), "--labels", str(ws / "labels.npy"), "-o", str(ws / "labels.npy")]),  # fmt: skip
            ("run -o the plan", lambda ws, out: ["run", _q(ws), "-d", _d(ws), "-o", str(ws / "q.plan.json")]),  # fmt: skip
            ("run -o the plan through a link", lambda ws, out: ["run", _q(ws), "-d", _d(ws), "-o", str(ws / "link.plan.json")]),  # fmt: skip
            ("run -o the plan through ..", lambda ws, out: ["run", _q(ws), "-d", _d(ws), "-o", str(ws / "data" / ".." / "q.plan.json")]),  # fmt: skip
            ("quantize -o the model", lambda ws, out: ["quantize", _m(ws), "-d", _d(ws), "-o", _m(ws)]),  # fmt: skip
            ("quantize --report onto the data", lambda ws, out: ["quantize", _m(ws), "-d", _d(ws), "-o", str(out / "x.onnx"), "--report", _d(ws)]),  # fmt: skip
            ("calibrate -o the data", lambda ws, out: ["calibrate", _m(ws), "-d", _d(ws), "-o", _d(ws)]),  # fmt: skip
            ("run --dump-dir onto the data file", lambda ws, out: ["run", _q(ws), "-d", _d(ws), "-o", str(out / "o.npz"), "--dump-dir", _d(ws)]),  # fmt: skip
        ]
    ],
    Case(
        "d1 run --dump-dir a folder holding the data",
        lambda ws, out: ["run", _q(ws), "-d", str(ws / "data" / "image.npy"), "-o", str(out / "o.npz"), "--dump-dir", str(ws / "data")],  # fmt: skip
        "holds the input",
    ),
    # d2/d3: outputs that cannot be written fail before any work, and leave nothing.
    Case("d2 quantize -o a folder", _quantize("test.npz"), "is a folder", obstacles=("q3.onnx",)),
    Case("d2 run -o a folder", _run("test.npz"), "is a folder", obstacles=("o.npz",)),
    Case("d2 plan path is a folder", _quantize("test.npz"), "q3.plan.json", obstacles=("q3.plan.json",)),  # fmt: skip
    Case("d2 codegen: q_io.c is a folder", _codegen("q.onnx"), "q_io.c", obstacles=("c/q_io.c",)),
    Case("d3 quantize --report into a missing folder", _quantize("test.npz", "--report", "__OUT/nodir/r.html"), "does not exist"),  # fmt: skip
    Case("d3 calibrate -o a folder", _calibrate("test.npz"), "is a folder", obstacles=("r.json",)),
    Case("d3 run --dump-dir a file", _run("test.npz", "--dump-dir", "__OUT/f"), "is a file", files=("f",)),  # fmt: skip
    Case("missing output folder: run", lambda ws, out: ["run", _q(ws), "-d", _d(ws), "-o", str(out / "no" / "o.npz")], "does not exist"),  # fmt: skip
    Case("two outputs on one path", _quantize("test.npz", "--report", "__OUT/q3.plan.json"), "also the output"),  # fmt: skip
    Case("codegen -o a file", lambda ws, out: ["codegen", _q(ws), "-o", str(out / "f")], "is a file", files=("f",)),  # fmt: skip
]


def _expand(args: list[str], ws: Workspace, out: Path) -> list[str]:
    """``__name`` is a workspace file, ``__OUT/name`` a path in the output folder."""
    expanded = []
    for arg in args:
        if arg.startswith("__OUT/"):
            arg = str(out / arg.removeprefix("__OUT/"))
        elif arg.startswith("__"):
            arg = str(ws / arg.removeprefix("__"))
        expanded.append(arg)
    return expanded


def _tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case: Case, workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for obstacle in case.obstacles:
        (out / obstacle).mkdir(parents=True)
    for name in case.files:
        (out / name).write_text("an existing file\n")
    before, tree = workspace.digests(), _tree(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, _expand(case.args(workspace, out), workspace, out))
    assert result.exit_code == case.code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert case.message in lines[0], lines[0]
    for text in case.absent:
        assert text not in lines[0], lines[0]
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught
    assert workspace.digests() == before, "an input was changed"
    assert _tree(out) == tree, "a failed command left files behind"


# --- fi at float64's extremes (d12, d13) --------------------------------------------------


def _fi(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["fi", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_d12_fi_of_the_most_negative_float_shows_its_exact_value() -> None:
    code, out, err = _fi("--json", "--", "-1.7976931348623157e308")
    assert code == 0 and err == "", err
    # -128 * 2^1017 = -2^1024: the error against the typed value is exact and finite.
    assert '"stored_integer": -128' in out and '"error": -2.07729305190789' in out


def test_d13_fi_ranges_past_float64_are_written_exactly() -> None:
    code, out, _ = _fi("1e308", "-w", "16")
    assert code == 0 and "range [-2^1024, " in out and "-inf" not in out
    code, out, err = _fi("0.5", "--fraction-length", "65535", "-w", "64")
    assert code == 0 and "range [-2^-65472, (2^63-1)*2^-65535]" in out
    assert "[-0.0, 0.0]" not in out and "(2^63-1)*2^-65535 │" in out
    assert err.startswith("warning: 1 value(s) outside the range of sfix64_En65535, saturated")


# --- write errors at write time, Ctrl-C's exit status in-process (d2, d5) ------------------


def test_d2_a_write_refused_by_the_system_is_one_line_and_leaves_nothing(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only folder (simulated: tests may run as root, whom chmod does not stop)."""
    import tempfile

    real_mkstemp = tempfile.mkstemp
    made: list[str] = []

    def mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        if made:  # the plan, after the model's temporary was written
            raise PermissionError(13, "Permission denied", str(kwargs.get("dir")))
        fd, name = real_mkstemp(*args, **kwargs)  # type: ignore[call-overload]
        made.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    args = _quantize("test.npz")(workspace, tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.splitlines() == [
        f"error: cannot use {str(tmp_path)!r}: Permission denied"
    ], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_d5_ctrl_c_in_a_command_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import eightbit.cli.fi as fi_module

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fi_module, "_parse_values", interrupted)
    result = CliRunner().invoke(main, ["fi", "0.5"])
    assert result.exit_code == 130
    assert result.stderr.splitlines() == [
        "error: interrupted (Ctrl-C); outputs are written completely or not at all"
    ]
