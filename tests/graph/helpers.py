"""Oracles and small models shared by the graph tests (and the stem tests elsewhere)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import normalize
from tests.fixtures.models import random_inputs, run_onnxruntime


def assert_same_outputs(
    original: onnx.ModelProto,
    changed: onnx.ModelProto,
    feeds: dict[str, np.ndarray] | None = None,
    rtol: float = 1e-5,
) -> None:
    """ONNX Runtime gives both models' outputs equal within ``rtol`` (scaled by the output)."""
    feeds = random_inputs(original) if feeds is None else feeds
    expected = run_onnxruntime(original, feeds)
    actual = run_onnxruntime(changed, feeds)
    assert [o.name for o in original.graph.output] == [o.name for o in changed.graph.output]
    for want, got in zip(expected, actual, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = max(float(np.abs(want).max()), 1.0)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def serialized(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def stem_model(
    channels: int = 3,
    kernel: int = 7,
    stride: int = 2,
    pads: tuple[int, int, int, int] = (3, 3, 3, 3),
    size: tuple[int, int] = (32, 32),
    group: int = 1,
    seed: int = 0,
) -> onnx.ModelProto:
    """input -> Conv (the stem) -> Relu."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((8, channels // group, kernel, kernel)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    conv = helper.make_node(
        "Conv",
        ["x", "w", "b"],
        ["y"],
        name="stem",
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=list(pads),
        group=group,
    )
    relu = helper.make_node("Relu", ["y"], ["z"], name="relu")
    graph = helper.make_graph(
        [conv, relu],
        "stem",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, *size])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return normalize(model)
