"""Dynamic mode's kernels (docs/numerics.md §D): run-time quantization, the integer product,
the int8 table lookup.

``DynamicQuantizeStep`` is ONNX ``DynamicQuantizeLinear`` with ONNX Runtime's arithmetic
(eq. D.1): the range [min(0, min x), max(0, max x)] in float32, ``s = (max − min) / 255``,
``z = round_half_even(clamp(−min / s, 0, 255))``, ``q = clamp(round_half_even(x / s) + z)``.
It reads floats, so it is a boundary step, not an integer one. ``MatMulIntegerStep`` is
``MatMulInteger``: int32 sums of (a − z_a)(b − z_b[n]) (eq. D.2), exact. ``GatherRowsStep``
picks int8 rows of a table (eq. D.3): it moves integers only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eightbit.engine.kernels.gemm import exact_matmul
from eightbit.engine.program import Step
from eightbit.errors import DataError, ModelError
from eightbit.graph import Node


def dynamic_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 integers, scale and zero point of ``x`` as ``DynamicQuantizeLinear`` (eq. D.1)."""
    values = np.asarray(x, np.float32)
    if values.size and not np.all(np.isfinite(values)):
        raise DataError("DynamicQuantizeLinear cannot quantize NaN or infinite values")
    high = np.float32(max(0.0, float(values.max()))) if values.size else np.float32(0)
    low = np.float32(min(0.0, float(values.min()))) if values.size else np.float32(0)
    scale = np.float32(1.0) if high == low else np.float32(high - low) / np.float32(255)
    zero = np.float32(np.rint(np.clip(np.float32(0) - low / scale, 0, 255)))
    q = np.clip(np.rint(values / scale) + zero, 0, 255).astype(np.uint8)
    return q, np.asarray(scale, np.float32), np.asarray(zero, np.uint8)


@dataclass(frozen=True, eq=False)
class DynamicQuantizeStep(Step):
    """``DynamicQuantizeLinear``: float in; integers, scale and zero point out."""

    integer = False
    kind = "DynamicQuantize"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return dynamic_quantize(args[0])


def _zero(value: np.ndarray | None) -> np.ndarray:
    return np.zeros((), np.int64) if value is None else np.asarray(value, np.int64)


@dataclass(frozen=True, eq=False)
class MatMulIntegerStep(Step):
    """``MatMulInteger``: ``Σ_k (a[..., k] − z_a) · (b[k, n] − z_b[n])`` as int32 (eq. D.2)."""

    kind = "MatMulInteger"

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        a, b = np.asarray(args[0], np.int64), np.asarray(args[1], np.int64)
        shifted_a = a - _zero(args[2] if len(args) > 2 else None)
        shifted_b = b - _zero(args[3] if len(args) > 3 else None)
        return (_int32(np.matmul(shifted_a, shifted_b)),)

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        a = np.asarray(args[0], np.int64) - _zero(args[2] if len(args) > 2 else None)
        b = np.asarray(args[1], np.int64) - _zero(args[3] if len(args) > 3 else None)
        bound = int(np.abs(a).max(initial=0)) * int(np.abs(b).max(initial=0))
        sums = exact_matmul(a.astype(np.float32), b.astype(np.float32), bound)
        return (_int32(sums),)


def _int32(sums: np.ndarray) -> np.ndarray:
    """The int32 accumulator (an 8-bit product over K < 2^16 terms always fits)."""
    if sums.size and (sums.max() > np.iinfo(np.int32).max or sums.min() < np.iinfo(np.int32).min):
        raise ModelError("MatMulInteger's int32 sum overflows; the inner dimension is too large")
    return sums.astype(np.int32)


@dataclass(frozen=True, eq=False)
class GatherRowsStep(Step):
    """``Gather`` of rows of an integer table (axis 0): ONNX's index rule, negative from the
    end."""

    kind = "GatherRows"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        table, indices = np.asarray(args[0]), np.asarray(args[1])
        rows = table.shape[0]
        if indices.size and (indices.min() < -rows or indices.max() >= rows):
            raise DataError(
                f"Gather index out of range for a table of {rows} rows "
                f"(got {int(indices.min())}..{int(indices.max())})"
            )
        return (np.take(table, indices.astype(np.int64), axis=0),)


def dynamic_step(node: Node, integer_table: bool) -> Step | None:
    """The step of a node of a dynamic-mode model, or None when it computes in float.
    ``integer_table``: the node's first input is a constant of integers."""
    inputs, outputs = tuple(node.inputs), tuple(node.outputs)
    if node.op_type == "DynamicQuantizeLinear":
        return DynamicQuantizeStep(node.name, inputs, outputs)
    if node.op_type == "MatMulInteger":
        return MatMulIntegerStep(node.name, inputs, outputs)
    if node.op_type == "Gather" and integer_table and int(node.attrs.get("axis", 0)) == 0:
        return GatherRowsStep(node.name, inputs, outputs)
    return None
