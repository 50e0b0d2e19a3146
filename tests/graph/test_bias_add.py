"""A constant bias Add after a Conv or ConvTranspose (Paddle2ONNX's form) folds into its
bias, and a BatchNormalization after it then folds too; other Adds stay."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import normalize
from tests.graph.helpers import assert_same_outputs

FLOAT = TensorProto.FLOAT


def _conv_add(
    kind: str, constant_shape: tuple[int, ...], *, read_twice: bool = False, bn: bool = False
) -> onnx.ModelProto:
    """``x → <kind> → Add(Reshape(c)) [→ BatchNormalization] → y`` (and ``h`` as a second
    output when ``read_twice``)."""
    rng = np.random.default_rng(0)
    channels = 6
    if kind == "Conv":
        weight = rng.standard_normal((channels, 4, 3, 3))
        linear = helper.make_node("Conv", ["x", "w"], ["h"], name="linear", pads=[1] * 4)
    else:
        weight = rng.standard_normal((4, channels // 2, 2, 2))
        linear = helper.make_node("ConvTranspose", ["x", "w"], ["h"], name="linear", group=2)
    values = rng.uniform(-2.0, 2.0, int(np.prod(constant_shape)))
    shape = np.array(constant_shape, np.int64)
    nodes = [
        linear,
        helper.make_node("Reshape", ["c", "shape"], ["c_shaped"], name="reshape"),
        helper.make_node("Add", ["h", "c_shaped"], ["a"], name="bias_add"),
    ]
    inits = [
        numpy_helper.from_array(weight.astype(np.float32), "w"),
        numpy_helper.from_array(values.astype(np.float32), "c"),
        numpy_helper.from_array(shape, "shape"),
    ]
    last = "a"
    if bn:
        stats = [rng.uniform(0.5, 1.5, channels), rng.uniform(-1, 1, channels)]
        stats += [rng.uniform(-1, 1, channels), rng.uniform(0.1, 2.0, channels)]
        names = ["gamma", "beta", "mean", "var"]
        pairs = zip(names, stats, strict=True)
        inits += [numpy_helper.from_array(v.astype(np.float32), n) for n, v in pairs]
        nodes.append(helper.make_node("BatchNormalization", ["a", *names], ["y"], name="bn"))
        last = "y"
    outputs = [helper.make_tensor_value_info(last, FLOAT, None)]
    if read_twice:
        outputs.append(helper.make_tensor_value_info("h", FLOAT, None))
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 4, 5, 5])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.mark.parametrize("kind", ["Conv", "ConvTranspose"])
@pytest.mark.parametrize("shape", [(1, 6, 1, 1), (6, 1, 1), (1,)])
def test_per_channel_bias_add_folds_into_the_producer(kind: str, shape: tuple[int, ...]) -> None:
    model = _conv_add(kind, shape)
    normalized = normalize(model)
    assert _op_types(normalized) == [kind]
    assert list(normalized.graph.node[0].output) == ["a"]
    assert_same_outputs(model, normalized)


@pytest.mark.parametrize("kind", ["Conv", "ConvTranspose"])
def test_batchnorm_after_the_bias_add_folds_too(kind: str) -> None:
    model = _conv_add(kind, (1, 6, 1, 1), bn=True)
    normalized = normalize(model)
    assert _op_types(normalized) == [kind]
    assert_same_outputs(model, normalized)


def test_an_add_along_a_spatial_axis_stays() -> None:
    model = _conv_add("Conv", (1, 1, 1, 5))  # one value per column, not per channel
    normalized = normalize(model)
    assert _op_types(normalized) == ["Conv", "Add"]
    assert_same_outputs(model, normalized)


def test_a_producer_output_read_elsewhere_keeps_the_add() -> None:
    model = _conv_add("Conv", (1, 6, 1, 1), read_twice=True)
    normalized = normalize(model)
    assert _op_types(normalized) == ["Conv", "Add"]
    assert_same_outputs(model, normalized)
