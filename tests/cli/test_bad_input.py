"""Bad input over every subcommand: one ``error:`` line, exit 2, nothing lost (issue 14).

Each case runs the CLI in-process on a shared workspace of inputs (the demo model quantized
once per session) and checks: the exit status; stderr is exactly one ``error:`` line with
no traceback and no Python warning; every input's sha256 is unchanged; and the output
folder holds nothing new (no output, no temporary file). Cases named ``d<N>`` are the
defects of issue 14 (each failed on the code before it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from eightbit.cli import main
from tests.cli.conftest import Workspace


@dataclass(frozen=True)
class Case:
    """``command``: the arguments, split on spaces; ``{ws}`` is the workspace of inputs and
    ``{out}`` the (initially empty) output folder."""

    name: str
    command: str
    message: str  # a part of the one error line
    absent: tuple[str, ...] = ()  # must not be in the error line
    obstacles: tuple[str, ...] = ()  # folders made in the output folder first
    files: tuple[str, ...] = ()  # files made in the output folder first
    code: int = 2

    def args(self, ws: Workspace, out: Path) -> list[str]:
        return self.command.format(ws=ws.folder, out=out).split()


M, Q, D = "{ws}/mnist_cnn.onnx", "{ws}/q.onnx", "{ws}/test.npz"
VALIDATE = f"validate {M} {Q} --no-layers -d {{ws}}/"  # + data file
REPORT = f"report {M} {Q} -o {{out}}/r.html -d {{ws}}/"
RUN = f"run {Q} -o {{out}}/o.npz -d {{ws}}/"
QUANTIZE = f"quantize {M} -o {{out}}/q3.onnx --preset fast -d {{ws}}/"
CALIBRATE = f"calibrate {M} -o {{out}}/r.json -d {{ws}}/"
NOT_OFFERED = ("--skip-nonfinite (",)  # the advice may name calibrate's option, not offer it

CASES = [
    # Missing, empty, truncated and random models.
    Case(
        "missing model: calibrate",
        f"calibrate none.onnx -d {D} -o {{out}}/r.json",
        "does not exist",
    ),
    Case(
        "missing model: quantize", f"quantize none.onnx -d {D} -o {{out}}/q.onnx", "does not exist"
    ),
    Case("missing model: validate", f"validate none.onnx {Q} -d {D}", "does not exist"),
    Case(
        "missing model: report", f"report {M} none.onnx -d {D} -o {{out}}/r.html", "does not exist"
    ),
    *[
        Case(f"d14 {broken} model: {command}", text, broken.split(".")[0], absent=("no plan",))
        for broken in ("none.onnx", "empty.onnx", "truncated.onnx", "random.onnx")
        for command, text in [
            ("run", f"run {{ws}}/{broken} -d {D} -o {{out}}/o.npz"),
            ("codegen", f"codegen {{ws}}/{broken} -o {{out}}/c"),
        ]
    ],
    Case(
        "truncated model: quantize",
        f"quantize {{ws}}/truncated.onnx -d {D} -o {{out}}/q.onnx",
        "truncated",
    ),
    # Data: missing, wrong shape, NaN, empty, constant, huge, corrupt images.
    Case("missing data: quantize", QUANTIZE + "none.npz", "does not exist"),
    Case("wrong shape: validate", VALIDATE + "wrong_shape.npy", "shape"),
    Case("corrupt image: calibrate", CALIBRATE + "corrupt_images --channels gray", "a.png"),
    Case("d9 NaN advice: quantize", QUANTIZE + "nan.npy", "NaN", absent=NOT_OFFERED),
    Case("d9 NaN advice: validate", VALIDATE + "nan.npy", "NaN", absent=NOT_OFFERED),
    Case("d9 NaN advice: report", REPORT + "nan.npy", "NaN", absent=NOT_OFFERED),
    Case("d9 NaN advice: run", RUN + "nan.npy", "NaN", absent=NOT_OFFERED),
    Case("NaN: calibrate offers --skip-nonfinite", CALIBRATE + "nan.npy", "--skip-nonfinite"),
    Case("d10 zero samples: run", RUN + "empty.npy", "no samples"),
    Case("zero samples: quantize", QUANTIZE + "empty.npy", "sample"),
    Case("a scalar: quantize", QUANTIZE + "scalar.npy", "make that input a constant"),
    Case(
        "an int8 model: quantize",
        f"quantize {Q} -o {{out}}/q5.onnx --preset fast -d {D}",
        "is quantized already",
    ),
    Case(
        "an int8 model: calibrate",
        f"calibrate {Q} -o {{out}}/r5.json -d {D}",
        "is quantized already",
    ),
    Case("d8 constant data: quantize", QUANTIZE + "constant.npy", "identical"),
    Case("d8 constant data: calibrate", CALIBRATE + "constant.npy", "identical"),
    Case("d11 float64 beyond float32: quantize", QUANTIZE + "huge.npy", "float32's range"),
    Case(
        "d11 ranges beyond float32 name the tensor",
        f"quantize {M} --ranges {{ws}}/huge_ranges.json -o {{out}}/q.onnx",
        "tensor '",
    ),
    # Labels.
    Case(
        "d7 labels 99 (10 classes): validate",
        VALIDATE + "test.npz --labels {ws}/labels_99.npy",
        "10 classes",
    ),
    Case(
        "d7 labels -1: validate",
        VALIDATE + "test.npz --labels {ws}/labels_minus1.npy",
        "10 classes",
    ),
    Case("d7 labels 99: report", REPORT + "test.npz --labels {ws}/labels_99.npy", "10 classes"),
    Case("label count: validate", VALIDATE + "test.npz --labels {ws}/test.npz", "labels"),
    # Option values.
    Case("d15 --top -5", CALIBRATE + "test.npz --top -5", "--top"),
    Case("d16 --image-size abc", RUN + "test.npz --image-size abc", "224", absent=("0.485",)),
    Case("--batch-size 0: validate", VALIDATE + "test.npz --batch-size 0", "--batch-size"),
    Case("--method bad: quantize", QUANTIZE + "test.npz --method bad", "--method"),
    Case("unknown option: run", RUN + "test.npz --bogus", "--bogus"),
    # Plans.
    Case(
        "d4 binary plan: report",
        REPORT + "test.npz --plan {ws}/binary.plan.json",
        "not a text file",
    ),
    Case("d4 binary plan: run", RUN + "test.npz --plan {ws}/binary.plan.json", "not a text file"),
    Case(
        "d4 binary plan: codegen",
        f"codegen {Q} -o {{out}}/c --plan {{ws}}/binary.plan.json",
        "not a text file",
    ),
    Case(
        "d6 another model's plan: report",
        REPORT + "test.npz --plan {ws}/other_q.plan.json",
        "not belong",
    ),
    Case("another model's plan: run", RUN + "test.npz --plan {ws}/other_q.plan.json", "plan"),
    Case(
        "d17 float node, no 'exclude' advice",
        "codegen {ws}/other_q.onnx -o {out}/c",
        "Softmax",
        absent=("'exclude'",),
    ),
    # d1: outputs onto inputs (after links and '..').
    *[
        Case(f"{name} (output onto input)", text, "is the input file")
        for name, text in [
            ("d1 report -o its plan", f"report {M} {Q} -d {D} -o {{ws}}/q.plan.json"),
            (
                "d1 report --plan p -o p",
                f"report {M} {Q} -d {D} --plan {{ws}}/p.json -o {{ws}}/p.json",
            ),
            (
                "d1 report -o its labels",
                f"report {M} {Q} -d {D} --labels {{ws}}/labels.npy -o {{ws}}/labels.npy",
            ),
            ("d1 run -o the plan", f"run {Q} -d {D} -o {{ws}}/q.plan.json"),
            ("d1 run -o the plan via a link", f"run {Q} -d {D} -o {{ws}}/link.plan.json"),
            ("d1 run -o the plan via ..", f"run {Q} -d {D} -o {{ws}}/data/../q.plan.json"),
            ("quantize -o the model", f"quantize {M} -d {D} -o {M}"),
            ("quantize --report the data", f"quantize {M} -d {D} -o {{out}}/x.onnx --report {D}"),
            ("calibrate -o the data", f"calibrate {M} -d {D} -o {D}"),
            ("d1 run --dump-dir the data", f"run {Q} -d {D} -o {{out}}/o.npz --dump-dir {D}"),
        ]
    ],
    Case(
        "d1 run --dump-dir a folder holding the data",
        f"run {Q} -d {{ws}}/data/image.npy -o {{out}}/o.npz --dump-dir {{ws}}/data",
        "holds the input",
    ),
    # d2/d3: outputs that cannot be written fail before any work, and leave nothing.
    Case("d2 quantize -o a folder", QUANTIZE + "test.npz", "is a folder", obstacles=("q3.onnx",)),
    Case("d2 run -o a folder", RUN + "test.npz", "is a folder", obstacles=("o.npz",)),
    Case(
        "d2 plan path a folder", QUANTIZE + "test.npz", "q3.plan.json", obstacles=("q3.plan.json",)
    ),
    Case(
        "d2 codegen: q_io.c a folder",
        f"codegen {Q} -o {{out}}/c",
        "q_io.c",
        obstacles=("c/q_io.c",),
    ),
    Case(
        "d3 quantize --report nodir/",
        QUANTIZE + "test.npz --report {out}/nodir/r.html",
        "not exist",
    ),
    Case("d3 calibrate -o a folder", CALIBRATE + "test.npz", "is a folder", obstacles=("r.json",)),
    Case(
        "d3 run --dump-dir a file", RUN + "test.npz --dump-dir {out}/f", "is a file", files=("f",)
    ),
    Case("missing output folder: run", f"run {Q} -d {D} -o {{out}}/no/o.npz", "does not exist"),
    Case(
        "two outputs, one path",
        QUANTIZE + "test.npz --report {out}/q3.plan.json",
        "also the output",
    ),
    Case("codegen -o a file", f"codegen {Q} -o {{out}}/f", "is a file", files=("f",)),
]


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
        result = CliRunner().invoke(main, case.args(workspace, out))
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
    args = Case("", QUANTIZE + "test.npz", "").args(workspace, tmp_path)
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
