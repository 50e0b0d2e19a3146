"""Element-wise arithmetic on integers: Add and Mul, with numpy broadcasting (§E.4).

Add brings both operands to one integer scale before summing, as TFLite does: each offset
``q − z`` is shifted left by ``ADD_LEFT_SHIFT`` bits (room below the LSB) and rescaled by its
share ``s_i / s_max``; the sum is requantized once to the output:

    a' = rescale((q_a − z_a) · 2^20, s_a / s_max)        (the larger scale's share is 1: exact)
    b' = rescale((q_b − z_b) · 2^20, s_b / s_max)
    y  = clamp(z_y + rescale(a' + b', s_max / (2^20 · s_y)))

Mul needs no common scale: ``acc = (q_a − z_a)(q_b − z_b)`` and ``μ = s_a · s_b / s_y``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from eightbit.engine.kernels.requantize import Requantization, Rescale
from eightbit.engine.operands import NodeToPrepare, scalar_scale, scalar_zero_point
from eightbit.engine.program import Step

# |q − z| <= 255 < 2^8, so (q − z) · 2^20 < 2^28 and a sum of two rescaled operands < 2^29:
# int32 throughout, with 20 bits of the operand below the output's LSB before the one
# rounding that matters.
ADD_LEFT_SHIFT = 20


@dataclass(frozen=True, eq=False)
class AddStep(Step):
    zeros: tuple[int, int]
    operand_rescales: tuple[Rescale, Rescale]
    requantization: Requantization

    kind = "Add"

    def _run(self, a: np.ndarray, b: np.ndarray, reference: bool) -> np.ndarray:
        total: np.ndarray | None = None
        for values, zero, rescale in zip((a, b), self.zeros, self.operand_rescales, strict=True):
            shifted = (values.astype(np.int64) - zero) << ADD_LEFT_SHIFT
            part = rescale.apply_reference(shifted) if reference else rescale.apply(shifted)
            total = part if total is None else total + part
        assert total is not None
        rq = self.requantization
        return rq.apply_reference(total) if reference else rq.apply(total)

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self._run(args[0], args[1], reference=False),)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self._run(args[0], args[1], reference=True),)


@dataclass(frozen=True, eq=False)
class MulStep(Step):
    zeros: tuple[int, int]
    requantization: Requantization

    kind = "Mul"

    def _product(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a.astype(np.int64) - self.zeros[0]) * (b.astype(np.int64) - self.zeros[1])

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self.requantization.apply(self._product(args[0], args[1])),)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self.requantization.apply_reference(self._product(args[0], args[1])),)


def prepare_elementwise(node: NodeToPrepare) -> Step:
    a, b, out = node.integer(0), node.integer(1), node.output(0)
    scales = [scalar_scale(x.params, f"input {i}", node) for i, x in enumerate((a, b))]
    zeros = (
        scalar_zero_point(a.params, "input 0", node),
        scalar_zero_point(b.params, "input 1", node),
    )
    out_scale = scalar_scale(out.params, "the output", node)
    out_zero = scalar_zero_point(out.params, "the output", node)
    common: dict[str, Any] = {
        "node": node.node.name,
        "inputs": (a.name, b.name),
        "outputs": (out.name,),
    }
    if node.node.op_type == "Mul":
        real = np.float64(scales[0]) * np.float64(scales[1]) / np.float64(out_scale)
        return MulStep(
            **common,
            zeros=zeros,
            requantization=Requantization.from_real(real, out_zero, out.params.dtype),
        )
    largest = max(scales)
    rescales = (Rescale.from_real(scales[0] / largest), Rescale.from_real(scales[1] / largest))
    real = np.float64(largest) / (np.float64(2.0**ADD_LEFT_SHIFT) * np.float64(out_scale))
    return AddStep(
        **common,
        zeros=zeros,
        operand_rescales=rescales,
        requantization=Requantization.from_real(real, out_zero, out.params.dtype),
    )
