"""``eightbit quantize`` through click's runner: summary, JSON, files, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from eightbit.cli import main
from eightbit.graph import save_model
from tests.fixtures import models


@pytest.fixture
def model_and_data(tmp_path: Path) -> tuple[Path, Path]:
    model = models.conv_bn_relu()
    model_path = tmp_path / "model.onnx"
    save_model(model, model_path)
    data_path = tmp_path / "data.npz"
    np.savez(data_path, **models.random_inputs(model, n=24, seed=3))
    return model_path, data_path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_quantize_writes_model_and_plan_and_reports_json(
    model_and_data: tuple[Path, Path], tmp_path: Path
) -> None:
    model_path, data_path = model_and_data
    before = model_path.read_bytes()
    out = tmp_path / "int8.onnx"
    code, text = _run("quantize", str(model_path), "-d", str(data_path), "-o", str(out), "--json")
    assert code == 0, text
    summary = json.loads(text)
    assert summary["nodes_quantized"] > 0 and summary["fallbacks"] == []
    assert summary["bytes_before"] == len(before)
    assert summary["bytes_after"] == out.stat().st_size
    assert summary["check"]["samples"] == 4
    assert (tmp_path / "int8.plan.json").exists()
    onnx.checker.check_model(str(out))
    assert model_path.read_bytes() == before  # the input is never modified


def test_quantize_human_summary_and_pow2(model_and_data: tuple[Path, Path], tmp_path: Path) -> None:
    model_path, data_path = model_and_data
    out = tmp_path / "pow2.onnx"
    code, text = _run(
        "quantize", str(model_path), "-d", str(data_path), "-o", str(out), "--scheme", "pow2"
    )
    assert code == 0, text
    words = " ".join(text.split())  # the summary wraps to the terminal, wherever a path ends
    assert "scheme pow2" in words and "saved" in words and "quick check" in words
    scales = [
        onnx.numpy_helper.to_array(t)
        for t in onnx.load(str(out)).graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
    ]
    for scale in scales:
        mantissa, _ = np.frexp(scale)
        assert np.all(mantissa == 0.5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--exclude", "nope"], "'exclude' names 'nope'"),
        (["--activations", "uint8", "--scheme", "pow2"], "'activations' must be 'int8'"),
        (["--op-types", "Softmax"], "'op_types' must be op types"),
        (["--adaround-iters", "10"], "--adaround-iters needs --adaround"),
        (["--max-drop", "-1"], "'max_drop' must be a number >= 0"),
        (["--max-latency", "0.6"], "give 'max_drop' or 'min_sqnr' too"),
        (["--min-sqnr", "20", "--max-latency", "0"], "'max_latency' must be a ratio > 0"),
        (["--preset", "turbo"], "Invalid value for '--preset'"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    model_and_data: tuple[Path, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    model_path, data_path = model_and_data
    out = tmp_path / "x.onnx"
    code, text = _run("quantize", str(model_path), "-d", str(data_path), "-o", str(out), *extra)
    assert code == 2, text
    assert message in text and "Traceback" not in text
    assert not out.exists()


def test_output_over_input_is_refused(model_and_data: tuple[Path, Path]) -> None:
    model_path, data_path = model_and_data
    before = model_path.read_bytes()
    code, text = _run("quantize", str(model_path), "-d", str(data_path), "-o", str(model_path))
    assert code == 2 and "is the input file" in text
    assert model_path.read_bytes() == before


def test_data_for_another_model_exits_2(model_and_data: tuple[Path, Path], tmp_path: Path) -> None:
    model_path, _ = model_and_data
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 9, 9), dtype=np.float32))
    code, text = _run("quantize", str(model_path), "-d", str(wrong), "-o", str(tmp_path / "o.onnx"))
    assert code == 2 and "Traceback" not in text


def test_model_without_quantizable_ops_exits_2(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Softmax", ["x"], ["y"], name="softmax")],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    path = tmp_path / "softmax.onnx"
    save_model(model, path)
    data = tmp_path / "d.npy"
    np.save(data, np.ones((8, 4), dtype=np.float32))
    code, text = _run("quantize", str(path), "-d", str(data), "-o", str(tmp_path / "o.onnx"))
    assert code == 2 and "Traceback" not in text


def _steps(model_and_data: tuple[Path, Path], tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    model_path, data_path = model_and_data
    out = tmp_path / "steps.onnx"
    code, text = _run(
        "quantize", str(model_path), "-d", str(data_path), "-o", str(out), "--json", *extra
    )
    assert code == 0, text
    steps: list[dict[str, Any]] = json.loads(text)["steps"]
    saved = json.loads((tmp_path / "steps.plan.json").read_text())["steps"]
    assert [s["name"] for s in saved] == [s["name"] for s in steps]
    return steps


def test_default_preset_runs_equalization_and_bias_correction(
    model_and_data: tuple[Path, Path], tmp_path: Path
) -> None:
    steps = _steps(model_and_data, tmp_path)
    assert [s["name"] for s in steps] == ["equalize", "clipping", "bias_correction"]
    correction = steps[2]
    assert correction["before_db"] is not None and correction["seconds"] >= 0
    assert any(n.startswith(("kept", "reverted")) for n in correction["notes"])


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--preset", "fast"], []),
        (["--preset", "fast", "--bias-correction"], ["bias_correction"]),
        (["--no-equalize", "--no-bias-correction"], ["clipping"]),
        (["--no-equalize", "--no-bias-correction", "--no-clipping-choice"], []),
        (["--preset", "fast", "--refine-ranges"], ["refine_ranges"]),
    ],
)
def test_step_flags_override_the_preset(
    model_and_data: tuple[Path, Path], tmp_path: Path, extra: list[str], names: list[str]
) -> None:
    steps = _steps(model_and_data, tmp_path, *extra)
    assert [s["name"] for s in steps] == names


def test_human_summary_lists_the_steps(model_and_data: tuple[Path, Path], tmp_path: Path) -> None:
    model_path, data_path = model_and_data
    code, text = _run(
        "quantize", str(model_path), "-d", str(data_path), "-o", str(tmp_path / "h.onnx")
    )
    assert code == 0, text
    assert "improvement steps" in text and "bias_correction" in text


@pytest.mark.parametrize(("flag", "moved"), [((), 1), (("--no-space-to-depth",), 0)])
def test_space_to_depth_stem_is_on_by_default_and_can_be_turned_off(
    tmp_path: Path, flag: tuple[str, ...], moved: int
) -> None:
    from tests.graph.helpers import stem_model

    model_path, data_path = tmp_path / "stem.onnx", tmp_path / "data.npy"
    save_model(stem_model(size=(32, 32)), model_path)
    np.save(data_path, np.random.default_rng(0).standard_normal((16, 3, 32, 32), np.float32))
    out = tmp_path / "int8.onnx"
    code, text = _run("quantize", str(model_path), "-d", str(data_path), "-o", str(out), *flag)
    assert code == 0, text
    ops = [node.op_type for node in onnx.load(str(out)).graph.node]
    assert ops.count("SpaceToDepth") == moved
    plan = json.loads((tmp_path / "int8.plan.json").read_text())
    assert ("space_to_depth_stem" in [step["name"] for step in plan["steps"]]) == bool(moved)


@pytest.mark.parametrize("saturates", [True, False])
def test_a_cpu_whose_default_int8_kernels_saturate_gets_a_note(
    model_and_data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    saturates: bool,
) -> None:
    monkeypatch.setattr("eightbit.graph.session.default_int8_kernels_saturate", lambda: saturates)
    model_path, data_path = model_and_data
    base = ("quantize", str(model_path), "-d", str(data_path), "--preset", "fast")
    _, text = _run(*base, "-o", str(tmp_path / "a.onnx"))
    _, raw = _run(*base, "-o", str(tmp_path / "b.onnx"), "--json")
    assert ("session.x64quantprecision=1" in text) == saturates
    assert (json.loads(raw)["runtime_note"] is not None) == saturates


def test_the_summary_counts_shape_arithmetic_in_one_row(tmp_path: Path) -> None:
    model = models.shape_arithmetic()
    model_path, data_path = tmp_path / "model.onnx", tmp_path / "data.npz"
    save_model(model, model_path)
    np.savez(data_path, **models.random_inputs(model, n=32, seed=3))
    args = ["quantize", str(model_path), "-d", str(data_path), "--preset", "fast"]
    code, text = _run(*args, "-o", str(tmp_path / "int8.onnx"), "--json")
    assert code == 0, text
    integer = [row["node"] for row in json.loads(text)["fallbacks"] if row["integer_outputs"]]
    assert integer == ["shape", "batch", "batch_1d", "target"]
    wide = {"COLUMNS": "200"}  # one table row per line
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "again.onnx")], env=wide)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "4 node(s)" in text and "integer outputs only (shape and index arithmetic)" in text
    assert "batch_1d" not in text  # counted, not listed


def test_a_step_with_many_notes_shows_its_first_and_last_ones(
    model_and_data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from eightbit.cli.quantize import _print_summary

    model_path, data_path = model_and_data
    out = tmp_path / "int8.onnx"
    code, text = _run("quantize", str(model_path), "-d", str(data_path), "-o", str(out), "--json")
    assert code == 0, text
    summary = json.loads(text)
    notes = [f"note{i:02d}" for i in range(30)]  # a net's promotion rung names each tensor
    summary["steps"] = [{"name": "safety_net", "seconds": 1.0, "before_db": None,
                         "after_db": None, "notes": notes}]  # fmt: skip
    monkeypatch.setenv("COLUMNS", "1000")  # one table row per line
    _print_summary(summary)
    printed = capsys.readouterr().out
    assert all(note in printed for note in [*notes[:8], *notes[-3:]])  # the verdict is last
    assert "... 19 more (the plan and --json list all) ..." in printed
    assert "note08" not in printed and "note26" not in printed
