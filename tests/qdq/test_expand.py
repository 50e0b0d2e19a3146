"""``expand`` puts back only what it can put back exactly (§Q11, §Q10.1)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from eightbit.qdq import expand


def _padded(zero_point_after_pad: bool) -> onnx.ModelProto:
    """x -> Q (int8) -> Pad on the stored integers -> DQ, with or without its zero point."""
    after = ["padded", "scale", "zero"] if zero_point_after_pad else ["padded", "scale"]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["stored"], name="q"),
        helper.make_node("Pad", ["stored", "pads"], ["padded"], name="pad"),
        helper.make_node("DequantizeLinear", after, ["y"], name="dq"),
    ]
    graph = helper.make_graph(
        nodes,
        "padded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        [
            numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
            numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_a_move_is_put_back_between_dq_and_q_with_the_same_function() -> None:
    model, x = _padded(zero_point_after_pad=True), np.array([[-20.0, -1.0, 0.5, 30.0]], np.float32)
    expanded = expand(model)
    assert [n.op_type for n in expanded.graph.node].count("QuantizeLinear") == 2
    np.testing.assert_array_equal(_run(expanded, x), _run(model, x))


def test_a_move_read_by_a_dq_without_zero_point_is_left_as_it_is() -> None:
    # A Q put back after the Pad would say uint8 (no zero point), not the int8 the DQ reads.
    model, x = _padded(zero_point_after_pad=False), np.array([[-20.0, -1.0, 0.5, 30.0]], np.float32)
    expanded = expand(model)
    assert expanded is model
    np.testing.assert_array_equal(_run(expanded, x), _run(model, x))
