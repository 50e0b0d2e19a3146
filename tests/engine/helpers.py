"""Shared by the engine tests: building prepared steps by hand, and comparing with ONNX Runtime.

``prepared`` turns operands into the ``NodeToPrepare`` a family's ``prepare`` takes, so a
test can build any step (any zero point, scale or shape) without a model. ``lsb_report``
measures engine outputs against ONNX Runtime's in units of the output's LSB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from hypothesis import settings

from eightbit.engine.operands import IntegerConstant, IntegerInput, NodeToPrepare, Operand
from eightbit.graph import Node
from eightbit.quant import QuantParams

# Shared CPU: a slow example is not a failure; kernels are checked on many small cases.
PROPERTY = settings(deadline=None, max_examples=40)


def params(
    scale: float | Sequence[float], zero_point: int | Sequence[int] = 0, dtype: str = "uint8"
) -> QuantParams:
    scales = np.asarray(scale, dtype=np.float32)
    axis = 0 if scales.ndim == 1 else None
    zeros = np.broadcast_to(np.asarray(zero_point, dtype=np.int64), scales.shape)
    return QuantParams(scales, zeros, dtype, axis)  # type: ignore[arg-type]


def activation(name: str, scale: float, zero_point: int = 0, dtype: str = "uint8") -> IntegerInput:
    return IntegerInput(name, params(scale, zero_point, dtype))


def constant(
    name: str,
    values: np.ndarray,
    scale: float | Sequence[float],
    dtype: str = "int8",
    axis: int = 0,
) -> IntegerConstant:
    quant = params(scale, 0, dtype)
    if quant.axis is not None:
        quant = QuantParams(quant.scale, quant.zero_point, quant.dtype, axis)
    return IntegerConstant(name, np.asarray(values), quant)


def prepared(
    op_type: str,
    inputs: Sequence[Operand],
    outputs: Sequence[IntegerInput],
    *,
    shapes: Sequence[tuple[int, ...] | None] = (),
    opset: int = 13,
    **attrs: Any,
) -> NodeToPrepare:
    node = Node(
        name="op",
        op_type=op_type,
        inputs=tuple("" if operand is None else operand.name for operand in inputs),
        outputs=tuple(output.name for output in outputs),
        attrs=MappingProxyType(dict(attrs)),
    )
    return NodeToPrepare(node, tuple(inputs), tuple(outputs), opset, tuple(shapes))


@dataclass(frozen=True)
class Agreement:
    """Engine vs ONNX Runtime on one output, in LSBs of the output scale."""

    largest: float
    exact: float  # fraction of elements exactly equal
    count: int

    def __str__(self) -> str:
        return f"max {self.largest:.3f} LSB, {self.exact:.4%} exactly equal ({self.count} values)"


def agreement(engine: np.ndarray, reference: np.ndarray, lsb: float) -> Agreement:
    difference = np.abs(engine.astype(np.float64) - reference.astype(np.float64)) / lsb
    # Dequantized values are float32 products s · (q − z): equal integers give equal floats,
    # one integer apart gives one LSB up to float32 rounding.
    return Agreement(
        float(difference.max()) if difference.size else 0.0,
        float(np.mean(difference < 1e-3)) if difference.size else 1.0,
        int(difference.size),
    )
