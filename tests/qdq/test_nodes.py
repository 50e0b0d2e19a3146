"""The one reading of a Q/DQ node (§Q10.1), against ONNX Runtime and onnx.reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from eightbit.graph import Graph
from eightbit.qdq import (
    UnreadableParams,
    dequantizes_constant,
    is_dequantize,
    is_quantize,
    quantize_before,
    read_params,
)
from eightbit.quant import dequantize_values, quantize_values


@dataclass(frozen=True)
class Case:
    name: str
    op: str
    x: np.ndarray
    scale: np.ndarray
    zero: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 19  # onnx.reference implements DequantizeLinear from opset 19


_FLOATS = np.array([-300.0, -3.0, -0.26, 0.0, 0.25, 1.0, 63.7, 200.0], np.float32)
CASES = (
    # No zero point on a DequantizeLinear: the zero of its input's type (not uint8).
    Case("dq_int8_without_zero_point", "DequantizeLinear", np.array([-128, -3, 0, 5, 127], np.int8),
         np.array(0.5, np.float32)),
    Case("dq_int32_bias_without_zero_point", "DequantizeLinear",
         np.array([-70000, -1, 0, 9, 2**20], np.int32), np.array(0.25, np.float32)),
    Case("dq_uint8_with_zero_point", "DequantizeLinear", np.array([0, 3, 128, 255], np.uint8),
         np.array(0.1, np.float32), np.array(128, np.uint8)),
    # ONNX Runtime's quantizer writes a per-tensor bias with scale (1,) and zero point ().
    Case("dq_one_element_scale_is_per_tensor", "DequantizeLinear",
         np.array([-7, 5, 9], np.int32), np.array([0.5], np.float32), np.array(0, np.int32)),
    Case("dq_per_axis", "DequantizeLinear", np.array([[-128, 1], [7, 127], [0, -5]], np.int8),
         np.array([0.5, 0.25, 2.0], np.float32), np.array([0, 3, -1], np.int8), {"axis": 0}),
    # No zero point on a QuantizeLinear: output_dtype (opset 21), else uint8.
    Case("q_without_zero_point_is_uint8", "QuantizeLinear", _FLOATS, np.array(0.5, np.float32)),
    Case("q_output_dtype_int8", "QuantizeLinear", _FLOATS, np.array(0.5, np.float32),
         attrs={"output_dtype": TensorProto.INT8}, opset=21),
    Case("q_int8_with_zero_point", "QuantizeLinear", _FLOATS, np.array(0.3, np.float32),
         np.array(-3, np.int8)),
)  # fmt: skip


def _model(case: Case) -> onnx.ModelProto:
    """The node alone, on constants; ONNX's type inference declares its output's type."""
    inputs = {"x": case.x, "scale": case.scale}
    if case.zero is not None:
        inputs["zero"] = case.zero
    node = helper.make_node(case.op, list(inputs), ["y"], name="node", **case.attrs)
    graph = helper.make_graph(
        [node],
        case.name,
        [],
        [],
        [numpy_helper.from_array(value, name) for name, value in inputs.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output.extend(info for info in inferred.graph.value_info if info.name == "y")
    return model


def _oracles(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    """What onnx.reference and ONNX Runtime compute for the node."""
    reference = ReferenceEvaluator(model).run(None, {})[0]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return reference, session.run(None, {})[0]


def _node_and_constants(model: onnx.ModelProto) -> tuple[Any, Any]:
    graph = Graph(model)
    return graph.nodes[0], graph.initializers


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_parameters_read_compute_what_onnx_runtime_and_onnx_reference_compute(case: Case) -> None:
    model = _model(case)
    reference, runtime = _oracles(model)
    assert reference.dtype == runtime.dtype
    np.testing.assert_array_equal(reference, runtime)
    params = read_params(*_node_and_constants(model))
    if case.op == "QuantizeLinear":
        ours = quantize_values(case.x, params)
        assert ours.dtype == runtime.dtype
        np.testing.assert_array_equal(ours, runtime)
    else:
        np.testing.assert_array_equal(dequantize_values(case.x, params), runtime)
        # The stored integers are exactly what these parameters give back: the type's
        # window holds them all (a uint8 reading of int8 or int32 values does not).
        stored = quantize_values(runtime, params)
        assert stored.dtype == case.x.dtype
        np.testing.assert_array_equal(stored, case.x)


def test_a_per_axis_scale_needs_a_zero_point_of_its_shape_as_onnx_runtime_does() -> None:
    x, scale = np.array([[5, -7, 9]], np.int8), np.array([0.5, 1.0, 2.0], np.float32)
    case = Case("scalar_zero", "DequantizeLinear", x, scale, np.array(1, np.int8), {"axis": 1})
    model = _model(case)
    with pytest.raises(Exception, match="x_zero_point must be null or 1D tensor with size 3"):
        _oracles(model)
    with pytest.raises(UnreadableParams, match=r"scale has shape \(3,\) and its zero point \(\)"):
        read_params(*_node_and_constants(model))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"block_size": 2}, "blocked quantization"),
        ({"computed_scale": True}, "computed at run time"),
        ({"int16": True}, r"stores int16; eightbit reads \['int8', 'uint8', 'int32'\]"),
        ({"output_dtype": 99}, r"stores 99; eightbit reads \['int8'"),  # no such type
    ],
)
def test_what_is_not_read_says_why(edit: dict[str, Any], reason: str) -> None:
    x = np.array([1, 2, 3, 4], np.int16 if "int16" in edit else np.int8)
    case = Case("refused", "DequantizeLinear", x, np.array(0.5, np.float32), opset=21)
    model = _model(case)
    node = model.graph.node[0]
    if "block_size" in edit:
        case_scale = np.array([0.5, 0.5], np.float32)
        model.graph.initializer[1].CopyFrom(numpy_helper.from_array(case_scale, "scale"))
        node.attribute.extend([helper.make_attribute("block_size", 2)])
        node.attribute.extend([helper.make_attribute("axis", 0)])
    if "computed_scale" in edit:
        node.input[1] = "computed"
    if "output_dtype" in edit:  # a QuantizeLinear without zero point says its type here
        node.op_type = "QuantizeLinear"
        node.attribute.extend([helper.make_attribute("output_dtype", edit["output_dtype"])])
    with pytest.raises(UnreadableParams, match=reason):
        read_params(*_node_and_constants(model))


def test_invalid_parameters_are_a_model_error_naming_the_node() -> None:
    case = Case("zero_scale", "DequantizeLinear", np.array([1], np.int8), np.array(0.0, np.float32))
    with pytest.raises(Exception, match=r"DequantizeLinear 'node' has invalid parameters: 'scale'"):
        read_params(*_node_and_constants(_model(case)))


def test_pairs_and_constants_are_recognised_in_onnx_domains_only() -> None:
    contrib = "com.microsoft"  # its QuantizeLinear (16-bit, 4-bit) is another operator
    scale, zero = numpy_helper.from_array(np.array(0.5, np.float32), "s"), "z"
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["a"], name="pair"),
        helper.make_node("DequantizeLinear", ["w", "s", "z"], ["b"], name="weight"),
        helper.make_node("QuantizeLinear", ["x", "s"], ["q16"], name="contrib", domain=contrib),
        helper.make_node("DequantizeLinear", ["q16", "s"], ["c"], name="other", domain="ai.onnx"),
    ]
    graph = helper.make_graph(
        nodes,
        "pairs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]) for name in "abc"],
        [
            scale,
            numpy_helper.from_array(np.array(0, np.int8), zero),
            numpy_helper.from_array(np.array([1, -1], np.int8), "w"),
        ],
    )
    view = Graph(helper.make_model(graph))
    by_name = {node.name: node for node in view.nodes}
    assert [is_quantize(n) for n in view.nodes] == [True, False, False, False, False]
    assert [is_dequantize(n) for n in view.nodes] == [False, True, True, False, True]
    assert quantize_before(view, by_name["pair"]) == by_name["q"]
    assert quantize_before(view, by_name["weight"]) is None
    assert quantize_before(view, by_name["other"]) is None  # com.microsoft's Q is another op
    assert [dequantizes_constant(view, by_name[n]) for n in ("pair", "weight")] == [False, True]
