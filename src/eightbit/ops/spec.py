"""``OpSpec``: what eightbit knows about quantizing one ONNX op type, declared as data.

Like NNCF's metatypes, each op states its ports and rules as fields (which inputs are
activations, where the weight and bias are, the weight's output-channel axis, how its output
parameters are chosen, how a layer's weight holds its channels, what the steps may do with
it) instead of code paths in the planner, the improvement steps and the QDQ writer. A family
file (conv.py, gemm.py, ...) declares the specs of its ops; their integer kernels live in
``engine/kernels/<family>.py`` and their C emitters in ``codegen/emit/<family>.py``
(docs/design.md, "Adding an operator family").
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from eightbit.graph import Graph, Node


class OutputParams(enum.Enum):
    """Where a quantized op's output parameters come from (docs/numerics.md §Q6)."""

    CALIBRATED = "calibrated"  # from the output's own calibrated range
    SAME_AS_INPUT = "same_as_input"  # the first data input's: the op only moves or selects values


@dataclass(frozen=True)
class PerTensor:
    """A weight that must be quantized per tensor here, and why (recorded in the plan)."""

    reason: str


class Contraction(enum.Enum):
    """How a layer reads its input through its weight. The layers are the heavy ops of the
    join rule (docs/numerics.md §Q13) and what the weight steps (§I, §R) work on."""

    # Each output position reads a window of every input channel of its group (Conv).
    CONVOLUTION = "convolution"
    # Each input position adds its weighted window into the output (ConvTranspose): an
    # output position reads a number of taps that depends on where it lies.
    TRANSPOSED_CONVOLUTION = "transposed_convolution"
    # A row of the input times the weight matrix (Gemm, MatMul).
    MATRIX = "matrix"


class Shift(enum.Enum):
    """How an op passes on a constant shift ``c`` of its data input (docs/numerics.md §Q16.1)."""

    # f(y − c) = f(y) − c: moves and maxima of values (MaxPool pads with −inf), averages
    # over a window without padding.
    COMMUTES = "commutes"
    # The output carries the sum of its inputs' shifts (Add).
    SUMS = "sums"


@dataclass(frozen=True)
class WeightLayout:
    """Where a layer's weight keeps its channels, as the node's attributes say.

    ``out_axis`` / ``in_axis``: the weight axes indexed by output and by input channel.
    ``groups``: channel groups (Conv's ``group``). One of the two axes spans every group,
    the other holds one group's channels: Conv ``[C_out, C_in/g, k...]`` spans them on the
    output axis, ConvTranspose ``[C_in, C_out/g, k...]`` on the input axis
    (``groups_on_out_axis`` False).
    """

    out_axis: int
    in_axis: int
    groups: int = 1
    groups_on_out_axis: bool = True

    def input_channels(self, shape: Sequence[int]) -> int:
        """Channels of the layer's input (axis 1 of its data input)."""
        return int(shape[self.in_axis]) * (self.groups if self.groups_on_out_axis else 1)

    def output_channels(self, shape: Sequence[int]) -> int:
        return int(shape[self.out_axis]) * (1 if self.groups_on_out_axis else self.groups)


@dataclass(frozen=True)
class Window:
    """A convolution's sliding window over the spatial axes, as its attributes say.

    ``pads``: the begin pads of every spatial axis, then the end pads; ``auto_pad`` as
    written (NOTSET, VALID, SAME_UPPER, SAME_LOWER): explicit pads apply only with NOTSET.
    """

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    auto_pad: str = "NOTSET"

    @property
    def padding_free(self) -> bool:
        """Every output reads only real inputs (no padding, explicit or automatic)."""
        return self.auto_pad in ("NOTSET", "VALID") and not any(self.pads)


# (node, weight shape) -> output-channel axis of the weight, or PerTensor(reason).
ChannelAxis = Callable[["Node", tuple[int, ...]], "int | PerTensor"]
# (node, graph) -> why this node cannot be quantized, or None when it can.
Check = Callable[["Node", "Graph"], "str | None"]
# (node attributes, weight shape) -> the weight's layout, or None when the layer's input does
# not hold its channels on axis 1 (Gemm with transA = 1).
LayoutRule = Callable[[Mapping[str, Any], tuple[int, ...]], "WeightLayout | None"]
# (node attributes, weight shape) -> a convolution's window.
WindowRule = Callable[[Mapping[str, Any], tuple[int, ...]], Window]
# (node, values of its constant inputs by port, None where a port is empty) -> (min, max) of a
# clamp activation, or None when a bound is not a scalar.
ClampRule = Callable[["Node", Sequence["np.ndarray | None"]], "tuple[float, float] | None"]


@dataclass(frozen=True)
class OpSpec:
    """Quantization facts of one op type.

    - ``data_inputs``: ports quantized as activations; None means every input (Concat).
    - ``weight_port`` / ``bias_port``: constant weight (int8) and bias (int32) ports.
    - ``weight_may_be_activation``: a non-constant weight port is then quantized as a second
      activation (MatMul of two activations) instead of keeping the node in float.
    - ``weight_channel_axis``: the weight's output-channel axis, from attributes and shape.
    - ``output_params``: own calibrated range, or the first data input's parameters.
    - ``absorbs_activation``: a following Relu/Clip can be folded into this op (§Q5).
    - ``clamp``: set for clamp activations (Relu, Clip) that can be folded: their bounds.
    - ``clamp_max_port``: the input that holds a clamp's upper bound (Clip's ``max``).
    - ``check``: attribute restrictions; returns the reason to keep a node in float.
    - ``contraction``: set for layers (the heavy ops): how the weight is applied.
    - ``weight_layout``: a layer's weight axes and groups, from attributes and shape.
    - ``window``: a convolution's kernel, strides, dilations and pads, likewise.
    - ``runtime_quantizes_float``: ONNX Runtime's WeightBiasQuantization (>= 1.20) turns a
      float node of this type whose input is dequantized per tensor into an int8 node; the
      QDQ writer guards the nodes a plan keeps in float (export/qdq.py).
    - ``homogeneous``: a positively homogeneous activation, ``f(x/s) = f(x)/s`` for
      ``s > 0`` (a clamp's upper bound scales with it, §I.2.3): equalization scales across it.
    - ``moved_on_stored_integers``: a pure move ONNX Runtime would run in float between a
      DequantizeLinear and a QuantizeLinear; the QDQ writer moves the stored integers (§Q11).
    - ``fill_value_port``: the input holding the value a constant-mode padding writes.
    - ``joins_along_axis``: the output is the inputs laid side by side along ``axis``.
    - ``shift``: how a constant shift of the data input reaches the output (centring, §Q16.1);
      None when it does not pass (a Pad writes 0, a Sigmoid bends it).
    """

    op_type: str
    data_inputs: tuple[int, ...] | None = (0,)
    weight_port: int | None = None
    bias_port: int | None = None
    weight_may_be_activation: bool = False
    weight_channel_axis: ChannelAxis | None = None
    output_params: OutputParams = OutputParams.CALIBRATED
    absorbs_activation: bool = False
    clamp: ClampRule | None = None
    clamp_max_port: int | None = None
    check: Check | None = None
    contraction: Contraction | None = None
    weight_layout: LayoutRule | None = None
    window: WindowRule | None = None
    runtime_quantizes_float: bool = False
    homogeneous: bool = False
    moved_on_stored_integers: bool = False
    fill_value_port: int | None = None
    joins_along_axis: bool = False
    shift: Shift | None = None

    def data_ports(self, node: Node) -> tuple[int, ...]:
        """Indices of ``node``'s inputs that are activations (present inputs only)."""
        ports = range(len(node.inputs)) if self.data_inputs is None else self.data_inputs
        return tuple(i for i in ports if i < len(node.inputs) and node.inputs[i])

    @property
    def same_as_input(self) -> bool:
        return self.output_params is OutputParams.SAME_AS_INPUT

    @property
    def is_layer(self) -> bool:
        """A heavy op: it applies a weight (Conv, ConvTranspose, Gemm, MatMul)."""
        return self.contraction is not None

    def reason_not_quantized(self, node: Node, graph: Graph) -> str | None:
        return None if self.check is None else self.check(node, graph)

    def clamp_bounds(self, node: Node, graph: Graph) -> tuple[float, float] | None:
        """A clamp's [min, max] in ``graph``; None when it is no clamp or a bound is not a
        constant scalar."""
        if self.clamp is None:
            return None
        given = []
        for port in range(1, len(node.inputs)):
            name = optional_input(node, port)
            if name is not None and name not in graph.initializers:
                return None
            given.append(None if name is None else np.asarray(graph.initializers[name]))
        return self.clamp(node, (None, *given))


def attr(node: Node, name: str, default: Any) -> Any:
    """An attribute's value, with strings decoded from bytes when the view left them raw."""
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def optional_input(node: Node, port: int) -> str | None:
    """The tensor name at ``port``, or None when the input is absent or empty."""
    return node.inputs[port] if port < len(node.inputs) and node.inputs[port] else None
