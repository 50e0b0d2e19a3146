"""Dynamic mode on the integer engine: DynamicQuantizeLinear and MatMulInteger equal ONNX
Runtime's integers to the last bit; the whole model equals ONNX Runtime; codegen refuses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from eightbit.codegen import generate_c
from eightbit.engine import execute, prepare
from eightbit.engine.kernels.dynamic import MatMulIntegerStep, dynamic_quantize
from eightbit.errors import ModelError
from eightbit.graph import make_session
from eightbit.pipeline import quantize
from eightbit.quant import QuantConfig
from tests.dynamic.encoder import encoder, token_ids
from tests.fixtures.engine_trace import every_value, onnxruntime_values, outputs_of


def _dql_model() -> onnx.ModelProto:
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])
    graph = helper.make_graph(
        [node],
        "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [
            helper.make_tensor_value_info("q", TensorProto.UINT8, None),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("z", TensorProto.UINT8, None),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


_DQL = make_session(_dql_model())
_DQL_REFERENCE = ReferenceEvaluator(_dql_model())


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.normal(0, 1, (4, 33)).astype(np.float32),
        rng.uniform(0.5, 3, (7, 5)).astype(np.float32),  # all positive: min is 0
        -rng.uniform(0.5, 3, (3, 9)).astype(np.float32),  # all negative: max is 0
        np.zeros((2, 3), np.float32),  # max == min: scale 1
        (np.arange(-255, 256, dtype=np.float32) / 2).reshape(1, -1),  # ties at every half
        rng.normal(0, 1e4, (5, 17)).astype(np.float32),
    ]


@pytest.mark.parametrize("x", _cases())
def test_dynamic_quantize_equals_onnxruntime(x: np.ndarray) -> None:
    q, s, z = dynamic_quantize(x)
    ort_q, ort_s, ort_z = _DQL.run(None, {"x": x})
    assert np.array_equal(q, ort_q) and s == ort_s and z == ort_z
    ref_q, ref_s, ref_z = _DQL_REFERENCE.run(None, {"x": x})
    assert np.array_equal(q, ref_q) and z == ref_z
    # onnx.reference divides 1 by 255 when max == min (all zeros); ONNX Runtime's scale is
    # then 1, and the engine follows ONNX Runtime (the integers are 0 either way).
    assert s == ref_s or not x.any()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=1, max_size=64))
def test_dynamic_quantize_equals_onnxruntime_everywhere(values: list[float]) -> None:
    x = np.asarray(values, np.float32).reshape(1, -1)
    q, s, z = dynamic_quantize(x)
    ort_q, ort_s, ort_z = _DQL.run(None, {"x": x})
    assert np.array_equal(q, ort_q) and s == ort_s and z == ort_z


def _mmi_model(b: np.ndarray, zb: np.ndarray) -> onnx.ModelProto:
    """MatMulInteger with a constant weight, as dynamic mode writes it (ONNX Runtime packs
    a constant weight; a weight fed at run time takes another kernel)."""
    node = helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])
    graph = helper.make_graph(
        [node],
        "mmi",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, None),
            helper.make_tensor_value_info("za", TensorProto.UINT8, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [numpy_helper.from_array(b, "b"), numpy_helper.from_array(zb, "zb")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("depth", [3, 64, 1536])
@pytest.mark.parametrize("weight_type", [np.uint8, np.int8])
def test_matmul_integer_equals_onnxruntime(depth: int, weight_type: type) -> None:
    rng = np.random.default_rng(depth)
    a = rng.integers(0, 256, (2, 5, depth)).astype(np.uint8)
    a[0, 0] = 255  # the extremes, where 16-bit pair sums would saturate
    info = np.iinfo(weight_type)
    b = rng.integers(info.min, info.max + 1, (depth, 7)).astype(weight_type)
    b[:, 0] = info.max
    za = np.asarray(131, np.uint8)
    zb = np.full(7, 128 if weight_type is np.uint8 else 0, weight_type)
    zb[1] = 3
    (expected,) = make_session(_mmi_model(b, zb)).run(None, {"a": a, "za": za})
    step = MatMulIntegerStep("m", ("a", "b", "za", "zb"), ("y",))
    for got in (step.run(a, b, za, zb)[0], step.run_reference(a, b, za, zb)[0]):
        assert got.dtype == np.int32 and np.array_equal(got, expected)


@pytest.mark.parametrize("row_scales", [False, True])
def test_engine_runs_the_dynamic_model_like_onnxruntime(row_scales: bool) -> None:
    """Every integer tensor (quantized inputs, int32 sums, gathered rows) equals ONNX
    Runtime's; the float output equals it to float rounding."""
    result = quantize(encoder(), None, QuantConfig(mode="dynamic", row_scales=row_scales))
    program = prepare(result)
    ids = token_ids(8)
    ids[0, 0] = -3  # ONNX's index rule: from the end of the table
    values = every_value(program, {"ids": ids})
    integer = outputs_of(program, ("DynamicQuantize", "MatMulInteger", "GatherRows"))
    assert len(integer) >= (7 if not row_scales else 3)
    expected = onnxruntime_values(result.model, ["pooled", *integer], {"ids": ids})
    for name in integer:
        assert values[name].dtype == expected[name].dtype, name
        assert np.array_equal(values[name], expected[name]), name
    got = execute(program, {"ids": ids})["pooled"]
    assert np.allclose(got, expected["pooled"], rtol=1e-5, atol=1e-5)


def test_codegen_refuses_the_float_islands_by_name() -> None:
    result = quantize(encoder(), None, QuantConfig(mode="dynamic"))
    with pytest.raises(ModelError) as error:
        generate_c(result, "encoder")
    message = str(error.value)
    assert "\n" not in message and "scores (MatMul)" in message and "--mode static" in message
