"""quantize_values / dequantize_values against ONNX Runtime's QuantizeLinear/DequantizeLinear."""

from __future__ import annotations

from functools import cache

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from eightbit.errors import DataError
from eightbit.quant import QuantParams, dequantize_values, quantize_values

_ONNX_TYPES = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}


@cache
def _qdq_session(dtype: str, per_channel: bool) -> ort.InferenceSession:
    """x -> QuantizeLinear -> q and q -> DequantizeLinear -> r, scale and zero point as inputs."""
    axis = {"axis": 1} if per_channel else {}
    shape = ["c"] if per_channel else []
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **axis),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["r"], **axis),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c"]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("z", _ONNX_TYPES[dtype], shape),
        ],
        [
            helper.make_tensor_value_info("q", _ONNX_TYPES[dtype], ["n", "c"]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, ["n", "c"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, QuantParams]:
    dtype = draw(st.sampled_from(["uint8", "int8"]))
    low, high = (0, 255) if dtype == "uint8" else (-128, 127)
    channels = draw(st.integers(1, 3))
    per_channel = draw(st.booleans())
    count = channels if per_channel else 1
    scales = draw(st.lists(st.floats(2.0**-13, 10, width=32), min_size=count, max_size=count))
    zeros = draw(st.lists(st.integers(low, high), min_size=count, max_size=count))
    scale = np.array(scales, np.float32) if per_channel else np.float32(scales[0])
    zero = np.array(zeros) if per_channel else np.int64(zeros[0])
    params = QuantParams(scale, zero, dtype, 1 if per_channel else None)
    rows = draw(st.integers(1, 4))
    values = st.floats(-3000, 3000, width=32)
    # Exact ties (k + 1/2)·s exercise round-half-to-even.
    ties = st.integers(-300, 300).map(lambda k: float(np.float32((k + 0.5) * scales[0])))
    flat = draw(st.lists(values | ties, min_size=rows * channels, max_size=rows * channels))
    return np.array(flat, np.float32).reshape(rows, channels), params


@settings(max_examples=200, deadline=None)
@given(cases())
def test_quantize_and_dequantize_match_onnxruntime(case: tuple[np.ndarray, QuantParams]) -> None:
    x, params = case
    session = _qdq_session(params.dtype, params.per_channel)
    feeds = {"x": x, "s": params.scale, "z": params.zero_point.astype(params.numpy_dtype)}
    q, r = session.run(None, feeds)
    ours = quantize_values(x, params)
    assert ours.dtype == q.dtype
    np.testing.assert_array_equal(ours, q)
    np.testing.assert_array_equal(dequantize_values(ours, params), r)


def test_narrow_range_saturates_at_minus_127() -> None:
    params = QuantParams(np.float32(0.5), np.int64(0), "int8", narrow_range=True)
    np.testing.assert_array_equal(quantize_values([-1000, -63.75, 1000], params), [-127, -127, 127])


def test_int32_reaches_every_integer_up_to_2_to_the_30() -> None:
    params = QuantParams(np.float32(1.0), np.int64(0), "int32")
    values = np.array([2**30 - 1, -(2**30) + 1, 2**30], np.float64)
    np.testing.assert_array_equal(quantize_values(values, params), values.astype(np.int32))


def test_non_finite_values_and_misfit_channels_are_errors() -> None:
    params = QuantParams(np.array([1.0, 2.0], np.float32), np.zeros(2), "uint8", axis=1)
    with pytest.raises(DataError, match="NaN or infinite"):
        quantize_values(np.array([[np.nan, 0.0]]), params)
    with pytest.raises(DataError, match="2 channels on axis 1 do not fit an array of shape"):
        quantize_values(np.zeros((2, 3)), params)
