"""``OpSpec``: what eightbit knows about quantizing one ONNX op type, declared as data.

Like NNCF's metatypes, each op states its ports and rules as fields (which inputs are
activations, where the weight and bias are, the weight's output-channel axis, how its output
parameters are chosen) instead of code paths in the planner. A family file (conv.py,
gemm.py, ...) declares the specs of its ops; their integer kernels live in
``engine/kernels/<family>.py`` and their C emitters in ``codegen/emit/<family>.py``
(docs/design.md, "Adding an operator family").
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


# (node, weight shape) -> output-channel axis of the weight, or PerTensor(reason).
ChannelAxis = Callable[["Node", tuple[int, ...]], "int | PerTensor"]
# (node, graph) -> why this node cannot be quantized, or None when it can.
Check = Callable[["Node", "Graph"], "str | None"]
# (node, graph) -> (min, max) of a clamp activation, or None when its bounds are not constants.
ClampBounds = Callable[["Node", "Graph"], "tuple[float, float] | None"]


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
    - ``clamp_bounds``: set for clamp activations (Relu, Clip) that can be folded.
    - ``check``: attribute restrictions; returns the reason to keep a node in float.
    """

    op_type: str
    data_inputs: tuple[int, ...] | None = (0,)
    weight_port: int | None = None
    bias_port: int | None = None
    weight_may_be_activation: bool = False
    weight_channel_axis: ChannelAxis | None = None
    output_params: OutputParams = OutputParams.CALIBRATED
    absorbs_activation: bool = False
    clamp_bounds: ClampBounds | None = None
    check: Check | None = None

    def data_ports(self, node: Node) -> tuple[int, ...]:
        """Indices of ``node``'s inputs that are activations (present inputs only)."""
        ports = range(len(node.inputs)) if self.data_inputs is None else self.data_inputs
        return tuple(i for i in ports if i < len(node.inputs) and node.inputs[i])

    @property
    def same_as_input(self) -> bool:
        return self.output_params is OutputParams.SAME_AS_INPUT

    def reason_not_quantized(self, node: Node, graph: Graph) -> str | None:
        return None if self.check is None else self.check(node, graph)


def attr(node: Node, name: str, default: Any) -> Any:
    """An attribute's value, with strings decoded from bytes when the view left them raw."""
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def optional_input(node: Node, port: int) -> str | None:
    """The tensor name at ``port``, or None when the input is absent or empty."""
    return node.inputs[port] if port < len(node.inputs) and node.inputs[port] else None
