"""Element-wise arithmetic on integers: Add and Mul, with numpy broadcasting (§E.4).

Add is what ONNX Runtime's QLinearAdd computes (MLAS, float32 with fused multiply-adds),
with r_a = s_a / s_y and r_b = s_b / s_y in float32:

    F = float(z_y) − fma(r_p, z_p, r_q · z_q)
    y = sat(nearbyint(fma(p, r_p, fma(q, r_q, F))))

where (p, q) = (a, b), or (b, a) when ``a`` is broadcast along the innermost axis (ONNX
Runtime then swaps its operands), and int8 integers and zero points are shifted by 128 first
(ONNX Runtime runs int8 QDQ Adds as uint8). That is a function of two 8-bit integers, so Prepare
evaluates it exactly (``float32.fma``) for all 256 × 256 pairs: ``AddStep.table``. Eval
reads the table. Where the integer form below gives the same 65 536 integers (checked
exhaustively at Prepare; power-of-two scales do), the table is dropped and the integer
form runs, as TFLite's does: each offset ``q − z`` is shifted left by ``ADD_LEFT_SHIFT``
bits and rescaled by its share ``s_i / s_max``, the sum requantized once (§E.2):

    a' = rescale((q_a − z_a) · 2^20, s_a / s_max)        (the larger scale's share is 1)
    b' = rescale((q_b − z_b) · 2^20, s_b / s_max)
    y  = clamp(z_y + rescale(a' + b', s_max / (2^20 · s_y)))

Mul is ONNX Runtime's QLinearMul: ``acc = (q_a − z_a)(q_b − z_b)`` requantized (§E.2) with
the float32 scale ``s_a · s_b / s_y``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eightbit.engine.kernels import float32
from eightbit.engine.kernels.requantize import Requantization, Rescale, needs_wide, storage_type
from eightbit.engine.operands import NodeToPrepare, scalar_scale, scalar_zero_point
from eightbit.engine.program import Step
from eightbit.fixed import float32_scale_ratio

# |q − z| <= 255 < 2^8, so (q − z) · 2^20 < 2^28 and a sum of two rescaled operands < 2^29:
# int32 throughout, with 20 bits of the operand below the output's LSB before the one
# rounding that matters.
ADD_LEFT_SHIFT = 20
SWAPPED, DIRECT = "swapped", "direct"  # operand orders of ONNX Runtime's QLinearAdd


def operand_order(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> str:
    """SWAPPED when ``a`` is broadcast along the innermost axis the output varies on (ONNX
    Runtime's broadcaster then hands QLinearAdd a scalar A and swaps A and B), else DIRECT."""
    rank = max(len(a_shape), len(b_shape))
    a = (1,) * (rank - len(a_shape)) + tuple(a_shape)
    b = (1,) * (rank - len(b_shape)) + tuple(b_shape)
    for a_size, b_size in zip(reversed(a), reversed(b), strict=True):
        if max(a_size, b_size) > 1:
            return SWAPPED if a_size == 1 else DIRECT
    return DIRECT


@dataclass(frozen=True, eq=False)
class AddFloat:
    """ONNX Runtime's QLinearAdd constants (float32) and its result for all input pairs."""

    ratios: tuple[np.float32, np.float32]  # s_a / s_y, s_b / s_y
    zeros: tuple[int, int]
    out_zero: int
    dtype: str

    @classmethod
    def of(
        cls,
        scales: tuple[float, float],
        zeros: tuple[int, int],
        out_scale: float,
        out_zero: int,
        dtype: str,
    ) -> AddFloat:
        ratios = tuple(
            np.float32(float32.divide(np.float32(s), np.float32(out_scale))) for s in scales
        )
        return cls((ratios[0], ratios[1]), zeros, out_zero, dtype)

    def table(self, order: str) -> np.ndarray:
        """y for every (q_a, q_b), shape (256, 256), indexed by q − q_min of the type.

        ONNX Runtime runs int8 QDQ nodes as uint8 (its QDQS8ToU8Transformer adds 128 to
        the stored integers and the zero points of tensors inside the graph); Add's float
        rounding depends on the offset, so int8 is computed the way it runs: shifted.
        """
        offset = 128 if self.dtype == "int8" else 0
        codes = np.arange(256).astype(np.float32)  # stored integers, as uint8
        first, second = (0, 1) if order == DIRECT else (1, 0)
        r_p, r_q = self.ratios[first], self.ratios[second]
        z_p = np.float32(self.zeros[first] + offset)
        z_q = np.float32(self.zeros[second] + offset)
        zeros_part = float32.fma(r_p, z_p, float32.multiply(r_q, z_q))
        fixed = np.float32(np.float32(self.out_zero + offset) - zeros_part)
        inner = float32.fma(codes, r_q, fixed)  # one value per q
        value = float32.fma(codes[:, None], r_p, inner[None, :])  # [p, q]
        rounded = np.clip(np.rint(value), 0, 255).astype(np.int64) - offset
        by_pq = rounded.astype(storage_type(self.dtype))
        return by_pq if order == DIRECT else np.ascontiguousarray(by_pq.T)


@dataclass(frozen=True, eq=False)
class AddStep(Step):
    """``tables[order]`` is the 256 × 256 table of that operand order, or None where the
    integer form equals it (DIRECT at Prepare, SWAPPED when first needed). ``exact`` is
    None when the operands and output differ in type (no QLinearAdd: the integer form)."""

    zeros: tuple[int, int]
    operand_rescales: tuple[Rescale, Rescale]
    requantization: Requantization
    exact: AddFloat | None
    tables: dict[str, np.ndarray | None] = field(default_factory=dict)

    kind = "Add"

    def table(self, order: str) -> np.ndarray | None:
        """The table Eval reads for ``order``, or None: the integer form gives the same."""
        if self.exact is None:
            return None
        if order not in self.tables:
            table = self.exact.table(order)
            limits = np.iinfo(storage_type(self.exact.dtype))
            codes = np.arange(int(limits.min), int(limits.max) + 1)
            integer = self._integer(codes[:, None], codes[None, :], reference=False)
            self.tables[order] = None if np.array_equal(integer, table) else table
        return self.tables[order]

    def _integer(self, a: np.ndarray, b: np.ndarray, reference: bool) -> np.ndarray:
        total: np.ndarray | None = None
        for values, zero, rescale in zip((a, b), self.zeros, self.operand_rescales, strict=True):
            shifted = (values.astype(np.int64) - zero) << ADD_LEFT_SHIFT
            part = rescale.apply_reference(shifted) if reference else rescale.apply(shifted)
            total = part if total is None else total + part
        assert total is not None
        rq = self.requantization
        return rq.apply_reference(total) if reference else rq.apply(total)

    def _run(self, a: np.ndarray, b: np.ndarray, reference: bool) -> np.ndarray:
        table = self.table(operand_order(a.shape, b.shape))
        if table is None:
            return self._integer(a, b, reference)
        low = int(np.iinfo(table.dtype).min)
        if reference:
            first, second = np.broadcast_arrays(a, b)
            out = np.empty(first.shape, dtype=table.dtype)
            for index in np.ndindex(out.shape):
                out[index] = table[int(first[index]) - low, int(second[index]) - low]
            return out
        flat = (a.astype(np.intp) - low) * table.shape[1] + (b.astype(np.intp) - low)
        return table.reshape(-1)[flat]

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
        real = float32_scale_ratio(scales[0], scales[1], out_scale)
        return MulStep(
            **common,
            zeros=zeros,
            requantization=Requantization.from_real(real, out_zero, out.params.dtype),
        )
    largest = max(scales)
    # A 16-bit operand shifted by 2^20 reaches 2^35: the (E.13) wide rescales, in int64.
    wide = needs_wide(a.params.dtype, b.params.dtype)
    rescales = (
        Rescale.from_real(scales[0] / largest, wide=wide),
        Rescale.from_real(scales[1] / largest, wide=wide),
    )
    sum_scale = np.float64(largest) / (np.float64(2.0**ADD_LEFT_SHIFT) * np.float64(out_scale))
    exact = None
    if a.params.dtype == b.params.dtype == out.params.dtype and not wide:  # QLinearAdd's type
        exact = AddFloat.of((scales[0], scales[1]), zeros, out_scale, out_zero, out.params.dtype)
    step = AddStep(
        **common,
        zeros=zeros,
        operand_rescales=rescales,
        requantization=Requantization.from_real(sum_scale, out_zero, out.params.dtype, wide=wide),
        exact=exact,
    )
    step.table(DIRECT)  # the usual order, settled here; the swapped one when first needed
    return step
