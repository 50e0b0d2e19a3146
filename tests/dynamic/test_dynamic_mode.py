"""Dynamic mode: the plan, the written model against float, the CLI without data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from eightbit.cli import main
from eightbit.errors import ConfigError
from eightbit.export.dynamic import plan_dynamic, to_dynamic
from eightbit.graph import Graph, make_session, normalize, save_model
from eightbit.improve.presets import preset
from eightbit.pipeline import quantize
from eightbit.plan import QuantPlan
from eightbit.quant import QuantConfig
from tests.dynamic.encoder import encoder, token_ids

DYNAMIC = QuantConfig(mode="dynamic")


def _run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    return np.asarray(make_session(model).run(None, {"ids": ids})[0])


def _sqnr(reference: np.ndarray, got: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - got) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


def test_plan_quantizes_products_with_constant_weights_and_the_table() -> None:
    plan = plan_dynamic(Graph(normalize(encoder())), DYNAMIC)
    assert {d.name for d in plan.quantized_nodes()} == {"embed", "mm1", "gemm"}
    assert plan.decision("scores").reason  # two activations: float in dynamic mode
    assert plan.tensors["w1"].axis == 1 and plan.tensors["w2"].axis == 0  # output columns
    assert plan.tensors["table"].axis == 0 and plan.tensors["table"].scale.shape == (40,)
    assert QuantPlan.from_dict(json.loads(json.dumps(plan.to_dict()))).config.mode == "dynamic"


def test_written_model_is_close_to_float_and_uses_integer_kernels() -> None:
    model = normalize(encoder())
    plan = plan_dynamic(Graph(model), DYNAMIC)
    written = to_dynamic(model, plan)
    onnx.checker.check_model(written)
    ops = [node.op_type for node in written.graph.node]
    assert ops.count("MatMulInteger") == 2 and ops.count("MatMul") == 2  # attention: float
    assert not any(t.name in ("w1", "w2", "table") for t in written.graph.initializer)
    ids = token_ids(32)
    assert _sqnr(_run(model, ids), _run(written, ids)) > 30


def test_int8_table_rows_round_trip_within_half_a_step_of_their_own_scale() -> None:
    model = normalize(encoder())
    plan = plan_dynamic(Graph(model), DYNAMIC)
    written = to_dynamic(model, plan)
    written.graph.output.extend([onnx.helper.make_empty_tensor_value_info("embedded")])
    table = Graph(model).initializers["table"]
    ids = np.arange(40, dtype=np.int64).reshape(-1, 1)[:36].reshape(6, 6)  # every row, -4 too
    ids[0, 0] = -4  # ONNX's index rule: from the end
    rows = np.asarray(make_session(written).run(["embedded"], {"ids": ids})[0])
    expected = table[ids]
    step = plan.tensors["table"].scale[ids][..., None]
    assert np.all(np.abs(rows - expected) <= step / 2 + 1e-7)
    stored = next(t for t in written.graph.initializer if t.name.startswith("table_quantized"))
    assert stored.data_type == onnx.TensorProto.INT8  # a quarter of the float table


def test_static_plans_stay_as_they_were() -> None:
    static = QuantConfig(mode="static")
    assert "mode" not in static.to_dict()
    assert QuantConfig.from_dict(static.to_dict()).mode == "static"
    assert QuantConfig().mode == "auto"  # the API's default is the CLI's
    assert QuantConfig.from_dict(QuantConfig().to_dict()).mode == "auto"


def test_dynamic_refuses_settings_it_cannot_run() -> None:
    with pytest.raises(ConfigError, match="'mode' must be one of"):
        QuantConfig(mode="dynamik")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dynamic"):
        QuantConfig(mode="dynamic", scheme="pow2")


@pytest.mark.parametrize("asked", ["finetune", "adaround"])
def test_dynamic_refuses_training_on_static_grids(asked: str) -> None:
    improve = preset("finetune") if asked == "finetune" else preset("default", adaround=True)
    with pytest.raises(ConfigError, match=f"--{asked} trains on the static"):
        quantize(encoder(), {"ids": token_ids(8)}, DYNAMIC, improve=improve)


def test_quantize_without_data_in_dynamic_mode() -> None:
    result = quantize(encoder(), None, DYNAMIC)
    assert result.plan.config.mode == "dynamic" and result.check is None
    ids = token_ids(16)
    assert _sqnr(_run(encoder(), ids), _run(result.model, ids)) > 30


def test_quantize_with_data_holds_samples_back_for_the_check() -> None:
    result = quantize(encoder(), {"ids": token_ids(40)}, DYNAMIC, check_samples=10)
    assert result.check is not None and result.check.samples == 10
    assert [step.name for step in result.plan.steps] == ["outlier_channels", "row_scales"]


def test_cli_dynamic_without_data(tmp_path: Path) -> None:
    source = tmp_path / "encoder.onnx"
    save_model(encoder(), source)
    before = source.read_bytes()
    out = tmp_path / "int8.onnx"
    result = CliRunner().invoke(
        main, ["quantize", str(source), "-o", str(out), "--mode", "dynamic", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["mode"] == "dynamic" and summary["nodes_quantized"] == 3
    assert source.read_bytes() == before and out.exists()
    assert json.loads(out.with_name("int8.plan.json").read_text())["config"]["mode"] == "dynamic"


def test_cli_bad_mode_is_one_error_line(tmp_path: Path) -> None:
    source = tmp_path / "encoder.onnx"
    save_model(encoder(), source)
    out = tmp_path / "int8.onnx"
    result = CliRunner().invoke(main, ["quantize", str(source), "-o", str(out), "--mode", "fast"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--mode" in lines[0]
    assert "'static'" in lines[0] and "'dynamic'" in lines[0]  # what it accepts
    assert not out.exists()


def test_cli_static_without_data_still_refused(tmp_path: Path) -> None:
    source = tmp_path / "encoder.onnx"
    save_model(encoder(), source)
    result = CliRunner().invoke(main, ["quantize", str(source), "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 2 and "dynamic" in result.output


def test_cli_validate_and_report_read_a_dynamic_model(tmp_path: Path) -> None:
    source, data, out = tmp_path / "encoder.onnx", tmp_path / "ids.npz", tmp_path / "int8.onnx"
    save_model(encoder(), source)
    np.savez(data, ids=token_ids(40))
    runner = CliRunner()
    made = runner.invoke(main, ["quantize", str(source), "-o", str(out), "--mode", "dynamic"])
    assert made.exit_code == 0, made.output
    checked = runner.invoke(main, ["validate", str(source), str(out), "-d", str(data), "--json"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.output)["outputs"][0]["sqnr_db"] > 30
    page = tmp_path / "report.html"
    reported = runner.invoke(
        main, ["report", str(source), str(out), "-d", str(data), "-o", str(page)]
    )
    assert reported.exit_code == 0, reported.output
    assert page.exists()


def test_a_budget_returns_products_to_float_through_the_fallback() -> None:
    data = {"ids": token_ids(60)}
    result = quantize(encoder(), data, DYNAMIC, improve=preset("fast", min_sqnr=60.0))
    (step,) = [s for s in result.plan.steps if s.name == "fallback"]
    assert step.before_db is not None and step.after_db is not None
    assert step.after_db > step.before_db
    returned = {d.name for d in result.plan.fallbacks() if d.reason and "exclude" in d.reason}
    assert returned and returned <= {"embed", "mm1", "gemm"}
