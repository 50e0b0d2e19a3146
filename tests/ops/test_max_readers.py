"""§Q15: the tensors a global max reads keep their observed maximum.

The planted model pools the largest value of a heavy-tailed activation (log-normal, scaled
and biased by pointwise ops after a Conv): the percentile range (the default) clips the
top 0.01 % of the values, exactly the ones GlobalMaxPool returns.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import Graph, normalize
from eightbit.ops.max_readers import max_read_tensors
from tests.ops.helpers import fast_int8_sqnr

CHANNELS, SIZE = 4, 32


def pooled_max_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((8, CHANNELS, 1, 1)) * 0.6).astype(np.float32)
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w"], ["conv"], name="conv"),
        node("Exp", ["conv"], ["tail"], name="exp"),  # float: the heavy tail
        node("Mul", ["tail", "gain"], ["scaled"], name="gain_mul"),
        node("Add", ["scaled", "bias"], ["biased"], name="bias_add"),
        node("Relu", ["biased"], ["relu"], name="relu"),
        node("GlobalMaxPool", ["relu"], ["pooled"], name="pool"),
        node("Flatten", ["pooled"], ["flat"], name="flatten"),
        node("Gemm", ["flat", "w_fc"], ["y"], name="fc", transB=1),
    ]
    initializers = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.full((1, 8, 1, 1), 0.1, np.float32), "bias"),
        numpy_helper.from_array(np.array(2.0, np.float32), "gain"),
        numpy_helper.from_array(np.eye(8, dtype=np.float32), "w_fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "pooled_max",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _data(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, CHANNELS, SIZE, SIZE)).astype(np.float32)


def test_the_tensors_before_the_max_are_found_up_to_the_conv() -> None:
    graph = Graph(normalize(pooled_max_model()))
    found = max_read_tensors(graph)
    assert {"conv", "tail", "scaled", "biased", "relu"} <= found
    assert "x" not in found and "flat" not in found  # not above the Conv, not after the max


def test_the_pooled_maxima_are_not_clipped() -> None:
    sqnr = fast_int8_sqnr(pooled_max_model(), _data(64, 1), _data(32, 2))
    # 16.1 dB; with the percentile ranges clipping the pooled tail: 6.8 dB (measured)
    assert sqnr > 12.0, sqnr
