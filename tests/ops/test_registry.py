"""The op registry: the issue's list, facts declared per op, attribute-dependent rules."""

from __future__ import annotations

import math

import numpy as np
from onnx import helper

from eightbit.graph import Graph, Node
from eightbit.ops import (
    Contraction,
    OpSpec,
    OutputParams,
    PerTensor,
    WeightLayout,
    Window,
    lookup,
    op_types_where,
    supported_op_types,
)
from eightbit.ops.joins import HEAVY_OPS
from eightbit.qdq.integer_moves import INTEGER_MOVES
from tests.export.helpers import make_model, normal

ISSUE_LIST = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "MaxPool",
    "AveragePool", "GlobalAveragePool", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Resize", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Split",
    "Slice", "Pad",
}  # fmt: skip
# Beyond the issue's list: the moves of the space-to-depth stem (docs/numerics.md §Q11).
EXTRA = {"SpaceToDepth", "DepthToSpace"}
LAYOUT = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Split", "Slice", "Pad"}
LAYOUT |= EXTRA


def _node(op_type: str, **attrs: object) -> Node:
    proto = helper.make_node(op_type, ["x", "w"], ["y"], name="n", **attrs)
    return Node("n", op_type, tuple(proto.input), tuple(proto.output), attrs)


def test_the_registry_holds_exactly_the_issue_list() -> None:
    assert set(supported_op_types()) == ISSUE_LIST | EXTRA
    for op_type in ("Softmax", "LayerNormalization", "Erf", "BatchNormalization"):
        assert lookup(op_type) is None
    assert lookup("Conv", "com.microsoft") is None
    assert lookup("Conv", "ai.onnx") is lookup("Conv")


def test_value_preserving_ops_keep_their_input_parameters() -> None:
    same = {
        op for op in ISSUE_LIST | EXTRA if _spec(op).output_params is OutputParams.SAME_AS_INPUT
    }
    assert same == LAYOUT | {"MaxPool", "Resize", "Relu", "Clip"}


def _spec(op_type: str) -> OpSpec:
    spec = lookup(op_type)
    assert spec is not None
    return spec


def _axis(op_type: str, shape: tuple[int, ...], **attrs: object) -> int | PerTensor:
    rule = _spec(op_type).weight_channel_axis
    assert rule is not None
    return rule(_node(op_type, **attrs), shape)


def test_weight_ports_and_channel_axes_are_declared() -> None:
    assert (_spec("Conv").weight_port, _spec("Conv").bias_port) == (1, 2)
    assert (_spec("Gemm").weight_port, _spec("Gemm").bias_port) == (1, 2)
    matmul = _spec("MatMul")
    assert (matmul.weight_port, matmul.bias_port, matmul.weight_may_be_activation) == (
        1,
        None,
        True,
    )
    assert _axis("Conv", (8, 1, 3, 3), group=8) == 0
    assert _axis("ConvTranspose", (4, 8, 3, 3)) == 1
    assert isinstance(_axis("ConvTranspose", (4, 4, 3, 3), group=2), PerTensor)
    assert _axis("Gemm", (8, 16), transB=1) == 0
    assert _axis("Gemm", (16, 8)) == 1
    assert _axis("MatMul", (16, 8)) == 1
    assert isinstance(_axis("MatMul", (2, 16, 8)), PerTensor)


def test_only_linear_ops_absorb_and_only_clamps_are_absorbed() -> None:
    absorbs = {op for op in ISSUE_LIST if _spec(op).absorbs_activation}
    assert absorbs == {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add"}
    clamps = {op for op in ISSUE_LIST if _spec(op).clamp is not None}
    assert clamps == {"Relu", "Clip"}


def test_attribute_rules_keep_nodes_in_float_with_a_reason() -> None:
    nodes = [
        helper.make_node("Resize", ["x", "", "s"], ["r"], name="cubic", mode="cubic"),
        helper.make_node("Clip", ["r", "lo"], ["c"], name="dynamic_clip"),
        helper.make_node("Clip", ["c", "zero", "six"], ["k"], name="relu6"),
        helper.make_node("Gemm", ["f", "w", "b"], ["g"], name="alpha_gemm", alpha=2.0),
        helper.make_node("Gemm", ["f", "w", "b2"], ["h"], name="wide_bias_gemm"),
    ]
    initializers = {
        "s": np.array([1, 1, 2, 2], np.float32),
        "zero": np.float32(0),
        "six": np.float32(6),
        "w": normal(4, 3),
        "b": normal(3),
        "b2": normal(2, 3),
    }
    inputs = [("x", (1, 2, 2, 2)), ("lo", ()), ("f", (2, 4))]
    outputs = [("k", (1, 2, 4, 4)), ("g", (2, 3)), ("h", (2, 3))]
    graph = Graph(make_model(nodes, inputs, outputs, initializers))

    def reason(name: str) -> str | None:
        node = graph.node(name)
        return _spec(node.op_type).reason_not_quantized(node, graph)

    assert "cubic" in (reason("cubic") or "")
    assert reason("dynamic_clip") == "Clip bounds are not constant scalars"
    assert reason("relu6") is None
    assert _spec("Clip").clamp_bounds(graph.node("relu6"), graph) == (0.0, 6.0)
    assert "alpha != 1" in (reason("alpha_gemm") or "")
    assert "bias C must have shape (3,)" in (reason("wide_bias_gemm") or "")


def _layout(op_type: str, shape: tuple[int, ...], **attrs: object) -> WeightLayout | None:
    rule = _spec(op_type).weight_layout
    assert rule is not None
    return rule(attrs, shape)


def test_layers_state_their_contraction_and_weight_layout() -> None:
    layers = {op for op in ISSUE_LIST | EXTRA if _spec(op).is_layer}
    assert layers == {"Conv", "ConvTranspose", "Gemm", "MatMul"} == set(HEAVY_OPS)
    assert _spec("Conv").contraction is Contraction.CONVOLUTION
    assert _spec("ConvTranspose").contraction is Contraction.TRANSPOSED_CONVOLUTION
    assert _spec("Gemm").contraction is _spec("MatMul").contraction is Contraction.MATRIX
    # Conv [C_out, C_in/g, k, k]: 8 outputs, 2 groups of 2 inputs.
    conv = _layout("Conv", (8, 2, 3, 3), group=2)
    assert conv == WeightLayout(out_axis=0, in_axis=1, groups=2)
    assert (conv.input_channels((8, 2, 3, 3)), conv.output_channels((8, 2, 3, 3))) == (4, 8)
    # ConvTranspose [C_in, C_out/g, k, k]: 4 inputs, 2 groups of 3 outputs.
    up = _layout("ConvTranspose", (4, 3, 2, 2), group=2)
    assert up is not None and (up.out_axis, up.in_axis, up.groups) == (1, 0, 2)
    assert (up.input_channels((4, 3, 2, 2)), up.output_channels((4, 3, 2, 2))) == (4, 6)
    assert _layout("Gemm", (5, 7), transB=1) == WeightLayout(out_axis=0, in_axis=1)
    assert _layout("Gemm", (7, 5)) == WeightLayout(out_axis=1, in_axis=0)
    assert _layout("Gemm", (7, 5), transA=1) is None  # A's axis 1 is not its channels
    assert _layout("MatMul", (7, 5)) == WeightLayout(out_axis=1, in_axis=0)
    assert _layout("MatMul", (2, 7, 5)) == WeightLayout(out_axis=2, in_axis=1)


def test_facts_the_steps_and_the_writer_read() -> None:
    def having(fact: str) -> set[str]:
        return {op for op in ISSUE_LIST | EXTRA if getattr(_spec(op), fact)}

    assert having("runtime_quantizes_float") == {"Conv", "ConvTranspose", "Gemm"}
    assert having("homogeneous") == {"Relu", "Clip", "LeakyRelu"}
    assert having("moved_on_stored_integers") == {"SpaceToDepth", "DepthToSpace", "Pad"}
    assert op_types_where(lambda spec: spec.moved_on_stored_integers) == INTEGER_MOVES
    assert {op: _spec(op).fill_value_port for op in having("fill_value_port")} == {"Pad": 2}
    assert having("joins_along_axis") == {"Concat"}
    assert {op: _spec(op).clamp_max_port for op in having("clamp_max_port")} == {"Clip": 2}


def test_one_clamp_reading_of_attributes_and_constant_inputs() -> None:
    relu, clip = _spec("Relu").clamp, _spec("Clip").clamp
    assert relu is not None and clip is not None
    assert relu(_node("Relu"), (None,)) == (0.0, math.inf)
    # Before opset 11 the bounds are attributes; after, optional inputs 1 and 2.
    assert clip(_node("Clip", min=-1.0, max=2.0), (None,)) == (-1.0, 2.0)
    assert clip(_node("Clip"), (None, np.float32(0), np.float32(6))) == (0.0, 6.0)
    assert clip(_node("Clip"), (None, None, np.float32(6))) == (-math.inf, 6.0)
    assert clip(_node("Clip"), (None, np.zeros(2, np.float32))) is None  # not a scalar


def test_a_convolution_states_its_window() -> None:
    assert {op for op in ISSUE_LIST | EXTRA if _spec(op).window is not None} == {"Conv"}
    window = _spec("Conv").window
    assert window is not None
    assert window({}, (8, 2, 3, 5)) == Window(
        kernel=(3, 5), strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0)
    )
    padded = window({"strides": [2, 2], "pads": [1, 0, 1, 0]}, (8, 2, 3, 3))
    assert (padded.strides, padded.pads, padded.padding_free) == ((2, 2), (1, 0, 1, 0), False)
    assert not window({"auto_pad": b"SAME_UPPER"}, (8, 2, 3, 3)).padding_free
    assert window({"auto_pad": b"VALID"}, (8, 2, 3, 3)).auto_pad == "VALID"
    assert window({"auto_pad": b"VALID"}, (8, 2, 3, 3)).padding_free
