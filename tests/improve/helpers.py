"""Small models for the improvement steps: layer pairs with and between activations."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import make_session

OPSET = 17


def _init(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _activation(
    kind: str | None, source: str, target: str, clip_max: float
) -> list[onnx.NodeProto]:
    if kind is None:
        return [helper.make_node("Identity", [source], [target], name="act")]
    if kind == "Clip":
        return [helper.make_node("Clip", [source, "clip_min", "clip_max"], [target], name="act")]
    if kind == "LeakyRelu":
        return [helper.make_node("LeakyRelu", [source], [target], name="act", alpha=0.1)]
    return [helper.make_node(kind, [source], [target], name="act")]


def conv_pair(
    activation: str | None = "Relu",
    *,
    depthwise: bool = False,
    channels: int = 6,
    spread: float = 30.0,
    second_kernel: int = 3,
    second_bias: bool = True,
    clip_max: float = 6.0,
    first_bias_shift: float = 0.0,
    tail: bool = False,
    groups: int = 1,
    seed: int = 0,
) -> onnx.ModelProto:
    """input [N,3,8,8] -> Conv 3x3 -> activation -> Conv (or depthwise Conv) -> output.

    Output channels of the first Conv get ranges spread over a factor ``spread`` (the
    situation equalization exists for); ``first_bias_shift`` is added to the first bias
    (a large value makes channels the activation never clips: high-bias absorption).
    ``tail``: a LeakyRelu after the second Conv, so that it does not write the output.
    ``groups``: the second Conv's groups when it is not depthwise (each group reads
    ``channels / groups`` inputs and writes 2 outputs).
    """
    rng = np.random.default_rng(seed)
    spreads = np.geomspace(1.0, spread, channels)[rng.permutation(channels)]
    w1 = rng.normal(0, 0.3, (channels, 3, 3, 3)) * spreads[:, None, None, None]
    b1 = rng.normal(0, 0.2, channels) * spreads + first_bias_shift
    if depthwise:
        w2 = rng.normal(0, 0.3, (channels, 1, second_kernel, second_kernel))
        out_channels, group = channels, channels
    else:
        out_channels, group = (4, 1) if groups == 1 else (2 * groups, groups)
        w2 = rng.normal(0, 0.3, (out_channels, channels // group, second_kernel, second_kernel))
    pad = second_kernel // 2
    second_inputs = ["mid", "w2"] + (["b2"] if second_bias else [])
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["pre"], name="first", pads=[1] * 4),
        *_activation(activation, "pre", "mid", clip_max),
        helper.make_node(
            "Conv", second_inputs, ["output"], name="second", pads=[pad] * 4, group=group
        ),
    ]
    if activation is None:
        nodes = [nodes[0], nodes[2]]
        nodes[1].input[0] = "pre"
    if tail:
        nodes[-1].output[0] = "second_out"
        nodes.append(helper.make_node("LeakyRelu", ["second_out"], ["output"], name="tail"))
    initializers = [_init("w1", w1), _init("b1", b1), _init("w2", w2)]
    if second_bias:
        initializers.append(_init("b2", rng.normal(0, 0.1, out_channels)))
    if activation == "Clip":
        initializers += [_init("clip_min", np.array(0.0)), _init("clip_max", np.array(clip_max))]
    graph = helper.make_graph(
        nodes,
        "pair",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def gemm_pair(seed: int = 0, features: int = 5, hidden: int = 7) -> onnx.ModelProto:
    """input [N,5] -> Gemm (transB=1) -> Relu -> Gemm (transB=0) -> output [N,3]."""
    rng = np.random.default_rng(seed)
    spreads = np.geomspace(1.0, 20.0, hidden)[rng.permutation(hidden)]
    w1 = rng.normal(0, 0.5, (hidden, features)) * spreads[:, None]
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["pre"], name="first", transB=1),
        helper.make_node("Relu", ["pre"], ["mid"], name="act"),
        helper.make_node("Gemm", ["mid", "w2", "b2"], ["output"], name="second"),
    ]
    initializers = [
        _init("w1", w1),
        _init("b1", rng.normal(0, 0.3, hidden) * spreads),
        _init("w2", rng.normal(0, 0.5, (hidden, 3))),
        _init("b2", rng.normal(0, 0.1, 3)),
    ]
    graph = helper.make_graph(
        nodes,
        "gemm_pair",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def inputs(model: onnx.ModelProto, n: int = 32, seed: int = 1, mean: float = 0.5) -> np.ndarray:
    """Samples for ``model``'s single input, with a non-zero mean."""
    dims = model.graph.input[0].type.tensor_type.shape.dim[1:]
    shape = [n, *[d.dim_value for d in dims]]
    return (np.random.default_rng(seed).normal(mean, 1.0, shape)).astype(np.float32)


def run(model: onnx.ModelProto, x: np.ndarray, output: str | None = None) -> np.ndarray:
    session = make_session(model, optimization="none")
    name = output or session.get_outputs()[0].name
    return np.asarray(session.run([name], {session.get_inputs()[0].name: x})[0])
