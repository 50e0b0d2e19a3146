"""What a kernel family's ``prepare`` sees of one quantized node.

The builder (``eightbit.engine.build``) reads the QDQ graph and hands each quantized node
to its family as a ``NodeToPrepare``: per input port, an integer tensor computed at run
time, an integer constant (weight, bias, constant operand) or a plain, unquantized input
(shape, axes, scales, pads); per output, the integer tensor the node writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from eightbit.errors import ModelError
from eightbit.graph import Node
from eightbit.quant import QuantParams


@dataclass(frozen=True, eq=False)
class IntegerInput:
    """A run-time integer tensor ``name`` stored with ``params``."""

    name: str
    params: QuantParams


@dataclass(frozen=True, eq=False)
class IntegerConstant:
    """A constant stored as integers: a weight, a bias, a constant operand of Add/Mul/Concat."""

    name: str
    values: np.ndarray
    params: QuantParams


@dataclass(frozen=True, eq=False)
class PlainInput:
    """An input that is not quantized; ``value`` is None when it is computed at run time."""

    name: str
    value: np.ndarray | None


Operand = IntegerInput | IntegerConstant | PlainInput | None


@dataclass(frozen=True, eq=False)
class NodeToPrepare:
    node: Node
    inputs: tuple[Operand, ...]
    outputs: tuple[IntegerInput, ...]
    opset: int
    # Static shapes of the inputs where the model declares them (None entries: unknown).
    input_shapes: tuple[tuple[int | str | None, ...] | None, ...] = ()

    def attr(self, name: str, default: Any) -> Any:
        value = self.node.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def refuse(self, why: str) -> ModelError:
        """The error for a quantized node the integer engine cannot run."""
        return ModelError(
            f"node {self.node.name!r} ({self.node.op_type}): {why}; the integer engine cannot "
            f"run it (keep the node in float with the plan's 'exclude')"
        )

    def operand(self, port: int) -> Operand:
        return self.inputs[port] if port < len(self.inputs) else None

    def integer(self, port: int) -> IntegerInput | IntegerConstant:
        """The quantized input at ``port``."""
        found = self.operand(port)
        if not isinstance(found, IntegerInput | IntegerConstant):
            raise self.refuse(f"input {port} is not quantized")
        return found

    def activation(self, port: int) -> IntegerInput:
        found = self.integer(port)
        if not isinstance(found, IntegerInput):
            raise self.refuse(f"input {port} is a constant where a run-time tensor was expected")
        return found

    def constant(self, port: int) -> np.ndarray | None:
        """The value of a constant plain input, None when absent; refused when computed."""
        found = self.operand(port)
        if found is None:
            return None
        if isinstance(found, PlainInput) and found.value is not None:
            return found.value
        raise self.refuse(f"input {port} must be a constant")

    def output(self, port: int = 0) -> IntegerInput:
        if port >= len(self.outputs):
            raise self.refuse(f"output {port} is not quantized")
        return self.outputs[port]


def scalar_zero_point(params: QuantParams, what: str, node: NodeToPrepare) -> int:
    if params.zero_point.ndim != 0:
        raise node.refuse(f"{what} must have one zero point (got {params.zero_point.size})")
    return int(params.zero_point)


def scalar_scale(params: QuantParams, what: str, node: NodeToPrepare) -> float:
    if params.scale.ndim != 0:
        raise node.refuse(f"{what} must be quantized per tensor (got {params.scale.size} scales)")
    return float(params.scale)


def largest_offset(params: QuantParams) -> int:
    """max |q − z| over the stored range: the bound an exact float sum needs."""
    zero = np.asarray(params.zero_point, dtype=np.int64)
    return int(max(np.max(zero - params.qmin), np.max(params.qmax - zero)))
