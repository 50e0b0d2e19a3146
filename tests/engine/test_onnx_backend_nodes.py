"""ONNX's own backend node tests for the quantized operators, run on the engine's kernels.

The cases come from onnx's test-case generators (``onnx.backend.test.case.node``): each
holds one node, its inputs and the outputs the ONNX reference expects. A small adapter
maps each node to the engine: QuantizeLinear/DequantizeLinear to the boundary steps,
QLinearConv/QLinearMatMul to the prepared Conv/MatMul steps (integer requantization),
ConvInteger/MatMulInteger to the accumulators. Both the fast and the naive kernels are
checked; outputs must be equal, not close. Cases outside the engine's 8-bit scope are
listed in ``EXCLUDED`` with the reason.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from eightbit.engine.floats import DequantizeStep, QuantizeStep
from eightbit.engine.kernels.conv import (
    conv_accumulate,
    conv_accumulate_reference,
    prepare_conv,
)
from eightbit.engine.kernels.gemm import (
    matmul_accumulate,
    matmul_accumulate_reference,
    prepare_matmul,
)
from eightbit.engine.kernels.window import Window
from eightbit.engine.operands import IntegerConstant, IntegerInput
from eightbit.graph import Node
from eightbit.qdq import read_params
from eightbit.quant import QuantParams
from tests.engine.helpers import prepared

OPERATORS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul")
OPERATORS += ("MatMulInteger", "ConvInteger")
_MODULES = ("quantizelinear", "dequantizelinear", "qlinearconv", "qlinearmatmul")
_MODULES += ("matmulinteger", "convinteger")
_OUT_OF_SCOPE = "the engine stores 8-bit integers only"
EXCLUDED = {
    "test_quantizelinear_e4m3fn": f"float8 e4m3fn: {_OUT_OF_SCOPE}",
    "test_quantizelinear_e5m2": f"float8 e5m2: {_OUT_OF_SCOPE}",
    "test_quantizelinear_uint16": f"uint16: {_OUT_OF_SCOPE}",
    "test_quantizelinear_int16": f"int16: {_OUT_OF_SCOPE}",
    "test_quantizelinear_uint4": f"uint4: {_OUT_OF_SCOPE}",
    "test_quantizelinear_int4": f"int4: {_OUT_OF_SCOPE}",
    "test_quantizelinear_uint2": f"uint2: {_OUT_OF_SCOPE}",
    "test_quantizelinear_int2": f"int2: {_OUT_OF_SCOPE}",
    "test_quantizelinear_float4e2m1": f"float4 e2m1: {_OUT_OF_SCOPE}",
    "test_quantizelinear_blocked_asymmetric": "blocked scales: eightbit quantizes per tensor "
    "or per channel",
    "test_quantizelinear_blocked_symmetric": "blocked scales: eightbit quantizes per tensor "
    "or per channel",
    "test_dequantizelinear_e4m3fn": f"float8 e4m3fn: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_e4m3fn_float16": f"float8 e4m3fn: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_e4m3fn_zero_point": f"float8 e4m3fn: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_e5m2": f"float8 e5m2: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_uint16": f"uint16: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_int16": f"int16: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_uint4": f"uint4: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_int4": f"int4: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_uint2": f"uint2: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_int2": f"int2: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_float4e2m1": f"float4 e2m1: {_OUT_OF_SCOPE}",
    "test_dequantizelinear_blocked": "blocked scales: eightbit quantizes per tensor or per channel",
}


def _collect() -> list[Any]:
    """The generated cases of the six operators (importing a module registers its cases)."""
    import onnx.backend.test.case.node as cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in _MODULES:
            importlib.import_module(f"onnx.backend.test.case.node.{module}")
    found = [case for case in cases._NodeTestCases if case.model.graph.node[0].op_type in OPERATORS]
    return list({case.name: case for case in found}.values())


CASES = _collect()


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _params(scale: np.ndarray, zero: np.ndarray | None, dtype: str, axis: int) -> QuantParams:
    """QuantParams of ONNX Q/DQ inputs: a scale of more than one value runs along ``axis``."""
    scales = np.asarray(scale, dtype=np.float32)  # float16 scales widen exactly
    zeros = np.zeros(scales.shape, np.int64) if zero is None else np.asarray(zero, np.int64)
    if scales.size == 1:
        return QuantParams(scales.reshape(()), zeros.reshape(()), dtype)  # type: ignore[arg-type]
    return QuantParams(scales, zeros.reshape(scales.shape), dtype, axis)  # type: ignore[arg-type]


def _read(node: onnx.NodeProto, inputs: list[np.ndarray]) -> QuantParams:
    """The node's parameters as every reader of a QDQ model reads them (§Q10.1)."""
    view = Node(node.name, node.op_type, tuple(node.input), tuple(node.output), _attrs(node))
    return read_params(view, dict(zip(node.input, inputs, strict=False)))


def _quantize(node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return list(QuantizeStep("q", ("x",), ("y",), _read(node, inputs)).run(inputs[0]))


def _dequantize(node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return list(DequantizeStep("dq", ("x",), ("y",), _read(node, inputs)).run(inputs[0]))


def _qlinear(node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """QLinearConv / QLinearMatMul as the engine's prepared steps, fast and naive."""
    x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = inputs[:8]
    is_conv = node.op_type == "QLinearConv"
    x_in = IntegerInput("x", _params(x_scale, x_zero, x.dtype.name, 1))
    w_params = _params(w_scale, w_zero, w.dtype.name, 0 if is_conv else 1)
    w_in = IntegerConstant("w", w, w_params)
    y_out = IntegerInput("y", _params(y_scale, y_zero, np.asarray(y_zero).dtype.name, 1))
    if is_conv:
        step = prepare_conv(prepared("Conv", [x_in, w_in], [y_out], **_attrs(node)))
    else:
        step = prepare_matmul(prepared("MatMul", [x_in, w_in], [y_out]))
    fast, naive = step.run(x)[0], step.run_reference(x)[0]
    np.testing.assert_array_equal(fast, naive)
    return [fast]


def _matmul_integer(node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    a, b = inputs[0], inputs[1]
    a_zero = int(np.asarray(inputs[2]).reshape(-1)[0]) if len(inputs) > 2 else 0
    b_zero = np.asarray(inputs[3] if len(inputs) > 3 else 0, dtype=np.int64)
    naive = matmul_accumulate_reference(a, b, a_zero, b_zero)
    centered = (b.astype(np.int64) - b_zero).astype(np.float32)
    fast = matmul_accumulate(a, centered, a_zero, 255 * 255)
    np.testing.assert_array_equal(fast, naive)
    return [fast.astype(np.int32)]


def _conv_integer(node: onnx.NodeProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x, w = inputs[0], inputs[1]
    x_zero = int(np.asarray(inputs[2]).reshape(-1)[0]) if len(inputs) > 2 else 0
    w_zero = np.asarray(inputs[3] if len(inputs) > 3 else 0, dtype=np.int64).reshape(-1)
    attrs = _attrs(node)
    window = Window.from_attrs(attrs, attrs.get("kernel_shape", w.shape[2:]))
    group = int(attrs.get("group", 1))
    naive = conv_accumulate_reference(x, w, x_zero, w_zero if w_zero.size > 1 else 0, window, group)
    zero = w_zero.reshape(-1, *([1] * (w.ndim - 1)))
    centered = (w.astype(np.int64) - zero).astype(np.float32)
    fast = conv_accumulate(x, centered, x_zero, window, group)
    np.testing.assert_array_equal(fast, naive)
    return [fast.astype(np.int32)]


ADAPTERS: dict[str, Callable[[onnx.NodeProto, list[np.ndarray]], list[np.ndarray]]] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "QLinearConv": _qlinear,
    "QLinearMatMul": _qlinear,
    "MatMulInteger": _matmul_integer,
    "ConvInteger": _conv_integer,
}


def test_every_operator_has_cases_and_every_exclusion_names_a_case() -> None:
    assert {case.model.graph.node[0].op_type for case in CASES} == set(OPERATORS)
    assert set(EXCLUDED) <= {case.name for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_backend_node_case(case: Any) -> None:
    if case.name in EXCLUDED:
        pytest.skip(EXCLUDED[case.name])
    node = case.model.graph.node[0]
    for inputs, expected in case.data_sets:
        got = ADAPTERS[node.op_type](node, [np.asarray(value) for value in inputs])
        assert len(got) == len(expected)
        for value, want in zip(got, expected, strict=True):
            assert value.dtype == np.asarray(want).dtype
            np.testing.assert_array_equal(value, want)
