"""A small encoder-like float model for dynamic mode: token ids -> embedding table ->
MatMul + bias -> Relu -> Gemm (transB) -> attention (MatMuls of two activations around a
Softmax) -> mean."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB, WIDTH, HIDDEN, OUT, TOKENS = 40, 16, 24, 8, 6


def encoder(seed: int = 0, outlier: float = 0.0) -> onnx.ModelProto:
    """``outlier``: added to one column of the first weight, making one channel of the
    hidden activation large (what outlier channels in float are for); the Gemm reads that
    channel through small weights, as a transformer's next layer does."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (WIDTH, HIDDEN)).astype(np.float32)
    w1[:, 3] += outlier
    w2 = rng.normal(0, 0.3, (OUT, HIDDEN)).astype(np.float32)  # Gemm transB: [N, K]
    if outlier:
        w2[:, 3] /= outlier
    constants = {
        "table": rng.normal(0, 1, (VOCAB, WIDTH)).astype(np.float32),
        "w1": w1,
        "b1": rng.normal(0, 0.1, HIDDEN).astype(np.float32),
        "w2": w2,
        "b2": rng.normal(0, 0.1, OUT).astype(np.float32),
        "flat": np.array([-1, HIDDEN], np.int64),
        "back": np.array([-1, TOKENS, OUT], np.int64),
    }
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["embedded"], name="embed"),
        helper.make_node("MatMul", ["embedded", "w1"], ["mm1"], name="mm1"),
        helper.make_node("Add", ["mm1", "b1"], ["hidden"], name="bias1"),
        helper.make_node("Relu", ["hidden"], ["relu"], name="relu"),
        helper.make_node("Reshape", ["relu", "flat"], ["rows"], name="flatten"),
        helper.make_node("Gemm", ["rows", "w2", "b2"], ["gemm"], name="gemm", transB=1),
        helper.make_node("Reshape", ["gemm", "back"], ["projected"], name="unflatten"),
        helper.make_node("Transpose", ["projected"], ["projected_t"], name="t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["projected", "projected_t"], ["scores"], name="scores"),
        helper.make_node("Softmax", ["scores"], ["weights"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["weights", "projected"], ["context"], name="context"),
        helper.make_node("ReduceMean", ["context"], ["pooled"], name="pool", axes=[2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", TOKENS])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", TOKENS])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def token_ids(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (count, TOKENS)).astype(np.int64)
