"""``spatial_means_as_global_pools``: which ReduceMeans it rewrites, and that outputs stay."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import make_session
from eightbit.graph.global_pool import spatial_means_as_global_pools


def _mean_model(
    axes: list[int], keepdims: int, *, opset: int = 18, shape: tuple[int, ...] = (2, 3, 5, 4)
) -> onnx.ModelProto:
    """x -> Relu -> ReduceMean(axes, keepdims) -> y; axes as an input (18) or attribute (13)."""
    inputs, attributes, initializers = ["r"], {"keepdims": keepdims}, []
    if opset >= 18:
        initializers.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        inputs.append("axes")
    else:
        attributes["axes"] = axes
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("ReduceMean", inputs, ["y"], name="mean", **attributes),
    ]
    graph = helper.make_graph(
        nodes,
        "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("axes", [[2, 3], [-1, -2], [3, -2]])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_spatial_means_become_global_pools_with_the_same_outputs(
    opset: int, axes: list[int], keepdims: int
) -> None:
    model = _mean_model(axes, keepdims, opset=opset)
    rewritten, names = spatial_means_as_global_pools(model)
    assert names == ["mean"]
    ops = [node.op_type for node in rewritten.graph.node]
    assert ops == ["Relu", "GlobalAveragePool"] + ([] if keepdims else ["Flatten"])
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
    expected = _outputs(model, x)
    np.testing.assert_allclose(_outputs(rewritten, x), expected, rtol=1e-6, atol=1e-7)
    assert _outputs(rewritten, x).shape == expected.shape
    assert [node.op_type for node in model.graph.node] == ["Relu", "ReduceMean"]  # unchanged


@pytest.mark.parametrize(
    ("axes", "shape"),
    [
        ([1, 2], (2, 3, 5, 4)),  # not the spatial axes
        ([2, 3, 1], (2, 3, 5, 4)),  # channels too
        ([2], (2, 3, 5, 4)),  # one spatial axis
        ([2, 3], (2, 3, 5, 4, 6)),  # rank 5: a volume, not an image
        ([1, 2], (2, 3, 5)),  # rank 3
    ],
)
def test_other_means_are_left_alone(axes: list[int], shape: tuple[int, ...]) -> None:
    model = _mean_model(axes, 1, shape=shape)
    rewritten, names = spatial_means_as_global_pools(model)
    assert names == []
    assert [node.op_type for node in rewritten.graph.node] == ["Relu", "ReduceMean"]


def test_empty_axes_with_noop_flag_is_left_alone() -> None:
    model = _mean_model([2, 3], 1)
    model.graph.node[1].attribute.append(helper.make_attribute("noop_with_empty_axes", 1))
    assert spatial_means_as_global_pools(model)[1] == []
