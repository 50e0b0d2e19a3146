"""§Q14: arithmetic whose every reader stays float is not rounded to int8 first.

The planted model is a LayerNorm the way jax2tf writes it (Magika): the variance as
E[x²] − E[x]² from ReduceSum · (1/n), between two MatMuls. Rounding the square and the
two means to int8 before the (float) subtraction ruins the variance.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import Graph, normalize
from eightbit.ops.float_readers import FLOAT_READERS_REASON
from eightbit.plan import make_plan
from eightbit.quant import QuantConfig
from tests.ops.helpers import fast_int8_sqnr

FEATURES, ROWS = 64, 16


def jax_layer_norm_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inverse_n = np.array([1.0 / FEATURES], np.float32)
    constants = {
        "w_in": rng.standard_normal((FEATURES, FEATURES)).astype(np.float32) * 0.2,
        "offset": np.full(FEATURES, 16.0, np.float32),  # a large mean: E[x²] ≈ E[x]²
        "inverse_n": inverse_n,
        "eps": np.array([1e-6], np.float32),
        "w_out": rng.standard_normal((FEATURES, 8)).astype(np.float32) * 0.3,
    }
    node = helper.make_node
    nodes = [
        node("MatMul", ["x", "w_in"], ["h0"], name="dense_in"),
        node("Add", ["h0", "offset"], ["h"], name="offset_add"),
        node("ReduceSum", ["h", "axes"], ["sum"], name="sum", keepdims=1),
        node("Mul", ["sum", "inverse_n"], ["mean"], name="mean"),
        node("Mul", ["h", "h"], ["square"], name="square"),
        node("ReduceSum", ["square", "axes"], ["sum_sq"], name="sum_sq", keepdims=1),
        node("Mul", ["sum_sq", "inverse_n"], ["mean_sq"], name="mean_sq"),
        node("Mul", ["mean", "mean"], ["mean_squared"], name="mean_squared"),
        node("Sub", ["mean_sq", "mean_squared"], ["variance"], name="variance"),
        node("Add", ["variance", "eps"], ["variance_eps"], name="variance_eps"),
        node("Sqrt", ["variance_eps"], ["std"], name="std"),
        node("Reciprocal", ["std"], ["inv_std"], name="inv_std"),
        node("Sub", ["h", "mean"], ["centred"], name="centred"),
        node("Mul", ["centred", "inv_std"], ["normed"], name="normed"),
        node("MatMul", ["normed", "w_out"], ["y"], name="dense_out"),
    ]
    initializers = [numpy_helper.from_array(v, k) for k, v in constants.items()]
    initializers.append(numpy_helper.from_array(np.array([-1], np.int64), "axes"))
    graph = helper.make_graph(
        nodes,
        "jax_layer_norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", ROWS, FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", ROWS, 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return model


def _data(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, ROWS, FEATURES)).astype(np.float32)


def test_the_square_and_the_means_stay_float_and_the_rest_int8() -> None:
    graph = Graph(normalize(jax_layer_norm_model()))
    names = {n for node in graph.nodes for n in (*node.inputs, *node.outputs) if n}
    wide = {name: (-50.0, 50.0) for name in names}
    plan = make_plan(graph, wide, QuantConfig())
    for name in ("square", "mean_sq", "mean_squared"):
        assert plan.decision(name).reason == FLOAT_READERS_REASON, name
    # By the fixed point: mean is read by mean_squared (now float) and the float Sub; h by
    # ReduceSum, square (now float) and the float Sub.
    assert plan.decision("mean").reason == FLOAT_READERS_REASON
    assert plan.decision("offset_add").reason == FLOAT_READERS_REASON
    # normed feeds the int8 MatMul; the MatMuls are heavy and stay int8 in any case.
    for name in ("dense_in", "normed", "dense_out"):
        assert plan.decision(name).quantized, name


def test_the_variance_survives_quantization() -> None:
    sqnr = fast_int8_sqnr(jax_layer_norm_model(), _data(64, 1), _data(16, 2))
    # 33.4 dB; rounding the square and the means to int8 first: 14.5 dB (measured)
    assert sqnr > 25.0, sqnr
