"""Per-row scales only where they gain (docs/numerics.md §D.9): the mixed graph form, its
integers against ONNX Runtime, the choice on calibration data, and the plan's record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from eightbit.engine import execute, prepare
from eightbit.export.dynamic import plan_dynamic, to_dynamic
from eightbit.graph import Graph, make_session, normalize
from eightbit.improve.row_choice import tensor_scale_products
from eightbit.pipeline import quantize
from eightbit.plan import QuantPlan
from eightbit.quant import QuantConfig
from tests.dynamic.encoder import encoder, token_ids
from tests.fixtures.engine_trace import every_value, onnxruntime_values, outputs_of

MIXED = QuantConfig(mode="dynamic", tensor_scales=("gemm",))


def _run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    return np.asarray(make_session(model).run(None, {"ids": ids})[0])


def _sqnr(reference: np.ndarray, got: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - got) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


def _optimized_op_types(model: onnx.ModelProto, tmp_path: Path) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


def test_tensor_scales_write_onnx_runtimes_fused_form_beside_per_row_inputs(
    tmp_path: Path,
) -> None:
    """``gemm`` takes one scale per tensor (fused by ONNX Runtime with its bias into one
    DynamicQuantizeMatMul), ``mm1`` keeps per-row scales; both close to float."""
    model = normalize(encoder())
    written = to_dynamic(model, plan_dynamic(Graph(model), MIXED))
    ops = [node.op_type for node in written.graph.node]
    assert ops.count("DynamicQuantizeLinear") == 1 and ops.count("ReduceMax") == 1
    assert ops.count("MatMulInteger") == 2
    optimized = _optimized_op_types(written, tmp_path)
    assert optimized.count("DynamicQuantizeMatMul") == 1
    assert "DynamicQuantizeLinear" not in optimized  # fused into the product
    ids = token_ids(32)
    assert _sqnr(_run(model, ids), _run(written, ids)) > 30


def test_engine_equals_onnxruntime_on_the_mixed_form() -> None:
    """Both inputs' integers and the int32 sums equal ONNX Runtime's to the last bit."""
    result = quantize(encoder(), None, MIXED)
    program = prepare(result)
    ids = token_ids(8)
    values = every_value(program, {"ids": ids})
    integer = outputs_of(program, ("DynamicQuantize", "MatMulInteger"))
    assert len(integer) == 5  # DynamicQuantizeLinear's three outputs, two products' sums
    per_row = [n.output[0] for n in result.model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(per_row) == 1  # mm1's input, per row (a float step: QuantizeLinear)
    expected = onnxruntime_values(result.model, ["pooled", *integer, *per_row], {"ids": ids})
    for name in [*integer, *per_row]:
        assert values[name].dtype == expected[name].dtype, name
        assert np.array_equal(values[name], expected[name]), name
    got = execute(program, {"ids": ids})["pooled"]
    assert np.allclose(got, expected["pooled"], rtol=1e-5, atol=1e-5)


def _two_inputs() -> onnx.ModelProto:
    """Two products of the same width: ``even`` reads rows of one range, ``uneven`` reads
    the same rows with one value of one token 200 times their spread (a transformer's rare
    huge activation), so that one scale per tensor leaves every other token a few levels."""
    rng = np.random.default_rng(3)
    tokens, width = 8, 64
    spike = np.zeros((tokens, width), np.float32)
    spike[2, 5] = 200.0
    constants = {
        "spike": spike,
        "w_even": rng.normal(0, 0.2, (width, 16)).astype(np.float32),
        "w_uneven": rng.normal(0, 0.2, (width, 16)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Add", ["x", "spike"], ["spread"], name="spread"),
        helper.make_node("MatMul", ["x", "w_even"], ["y_even"], name="even"),
        helper.make_node("MatMul", ["spread", "w_uneven"], ["y_uneven"], name="uneven"),
    ]
    shape = ["batch", tokens, width]
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [
            helper.make_tensor_value_info("y_even", TensorProto.FLOAT, ["batch", tokens, 16]),
            helper.make_tensor_value_info("y_uneven", TensorProto.FLOAT, ["batch", tokens, 16]),
        ],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return normalize(model)


def test_row_scales_kept_only_where_tokens_differ_in_range() -> None:
    samples = {"x": np.random.default_rng(4).normal(0, 1, (16, 8, 64)).astype(np.float32)}
    products, measured = tensor_scale_products(_two_inputs(), samples)
    assert products == ("even",)
    tensor_db, row_db = measured["spread"]
    assert tensor_db < 35 and row_db - tensor_db > 3  # the spike sets every token's step
    tensor_db, row_db = measured["x"]
    assert tensor_db > 35  # one scale per tensor is enough there


def test_dynamic_mode_with_data_records_the_choice_in_the_plan() -> None:
    result = quantize(encoder(), {"ids": token_ids(40)}, QuantConfig(mode="dynamic"))
    names = [step.name for step in result.plan.steps]
    assert names == ["outlier_channels", "row_scales"]
    chosen = result.plan.config.tensor_scales
    assert set(chosen) <= {"mm1", "gemm"}
    again = QuantPlan.from_dict(json.loads(json.dumps(result.plan.to_dict())))
    assert again.config.tensor_scales == chosen
    tensor_inputs = sum(n.op_type == "DynamicQuantizeLinear" for n in result.model.graph.node)
    assert tensor_inputs == len(chosen)
    ids = token_ids(16)
    assert _sqnr(_run(encoder(), ids), _run(result.model, ids)) > 30


def test_default_plans_do_not_record_tensor_scales() -> None:
    assert "tensor_scales" not in QuantConfig(mode="dynamic").to_dict()
    assert QuantConfig.from_dict(QuantConfig().to_dict()).tensor_scales == ()
