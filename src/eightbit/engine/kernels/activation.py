"""Activations on integers (§E.7): clamps, and 256-entry lookup tables for curves.

A standalone Relu or Clip that keeps its input's parameters is a clamp of the stored
integers: ``Q`` is monotone and ``Q(DQ(q)) = q``, so ``Q(clip(DQ(q), m, M)) = clip(q, Q(m),
Q(M))`` exactly. Every other activation of an 8-bit input has at most 256 distinct inputs,
so Prepare tabulates it:

    table[q − q_min] = Q_y(f(DQ_x(q)))          for every stored q of the input type

with DQ and Q exactly as ONNX DequantizeLinear/QuantizeLinear (float32, ties to even) and f
evaluated in float64. Eval is one table read per element: exact by construction, on any
device, for any f.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from eightbit.engine.operands import NodeToPrepare
from eightbit.engine.program import Step
from eightbit.ops import lookup
from eightbit.quant import QuantParams, dequantize_values, quantize_values

Curve = Callable[[np.ndarray, NodeToPrepare], np.ndarray]


def _sigmoid(x: np.ndarray, node: NodeToPrepare) -> np.ndarray:
    decay = np.exp(-np.abs(x))  # never overflows: the stable form of 1 / (1 + e^-x)
    return np.where(x >= 0, 1.0 / (1.0 + decay), decay / (1.0 + decay))


def _hard_sigmoid(x: np.ndarray, node: NodeToPrepare) -> np.ndarray:
    # In float32, as ONNX Runtime computes it: a linear map lands on Q_y's ties (x.5 steps)
    # for some grids, and a float64 result rounds to the other side of one.
    alpha = np.float32(node.attr("alpha", 0.2))
    beta = np.float32(node.attr("beta", 0.5))
    return np.clip(alpha * x.astype(np.float32) + beta, np.float32(0), np.float32(1))


def _hard_swish(x: np.ndarray, node: NodeToPrepare) -> np.ndarray:
    return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def _leaky_relu(x: np.ndarray, node: NodeToPrepare) -> np.ndarray:
    return np.where(x >= 0, x, float(node.attr("alpha", 0.01)) * x)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(v) for v in x.reshape(-1)]).reshape(x.shape)


def _gelu(x: np.ndarray, node: NodeToPrepare) -> np.ndarray:
    if node.attr("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _clip_bounds(node: NodeToPrepare) -> tuple[float, float]:
    """A Relu's or Clip's [min, max], read by its op spec as node selection reads it."""
    spec = lookup(node.node.op_type, node.node.domain)
    given = [None, *(node.constant(port) for port in range(1, len(node.inputs)))]
    bounds = None if spec is None or spec.clamp is None else spec.clamp(node.node, given)
    if bounds is None:
        raise node.refuse("its bounds must be constant scalars")
    return bounds


def _clip(x: np.ndarray, node: NodeToPrepare) -> np.ndarray:
    low, high = _clip_bounds(node)
    return np.clip(x, low, high)


CURVES: dict[str, Curve] = {
    "Sigmoid": _sigmoid,
    "Tanh": lambda x, node: np.tanh(x),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "LeakyRelu": _leaky_relu,
    "Gelu": _gelu,
    "Erf": lambda x, node: _erf(x),
    "Relu": _clip,
    "Clip": _clip,
}


def build_table(
    curve: Callable[[np.ndarray], np.ndarray], x_params: QuantParams, y_params: QuantParams
) -> np.ndarray:
    """``Q_y(f(DQ_x(q)))`` for q = q_min … q_max of the input type, as the output type."""
    codes = np.arange(x_params.qmin, x_params.qmax + 1, dtype=np.int64)
    real = dequantize_values(codes, x_params).astype(np.float64)
    return quantize_values(curve(real), y_params)


@dataclass(frozen=True, eq=False)
class LookupStep(Step):
    """``table[q − offset]``; ``offset`` is the input type's q_min."""

    table: np.ndarray
    offset: int

    kind = "Lookup"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self.table[args[0].astype(np.intp) - self.offset],)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        x = args[0]
        out = np.empty(x.shape, dtype=self.table.dtype)
        for index, q in np.ndenumerate(x):
            out[index] = self.table[int(q) - self.offset]
        return (out,)


@dataclass(frozen=True, eq=False)
class ClampStep(Step):
    low: int
    high: int

    kind = "Clamp"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (np.clip(args[0], self.low, self.high).astype(args[0].dtype),)


def prepare_activation(node: NodeToPrepare) -> Step:
    x, out = node.activation(0), node.output(0)
    op_type = node.node.op_type
    common: dict[str, Any] = {"node": node.node.name, "inputs": (x.name,), "outputs": (out.name,)}
    spec = lookup(op_type, node.node.domain)
    if spec is not None and spec.clamp is not None and x.params == out.params:
        low, high = _clip_bounds(node)
        q_low = x.params.qmin if low == -math.inf else int(quantize_values(low, x.params))
        q_high = x.params.qmax if high == math.inf else int(quantize_values(high, x.params))
        return ClampStep(**common, low=q_low, high=q_high)
    curve = CURVES.get(op_type)
    if curve is None:
        raise node.refuse(f"no lookup table for {op_type}")
    if x.params.per_channel or out.params.per_channel:
        raise node.refuse("a lookup table needs per-tensor parameters")
    table = build_table(lambda real: curve(real, node), x.params, out.params)
    return LookupStep(**common, table=table, offset=x.params.qmin)
