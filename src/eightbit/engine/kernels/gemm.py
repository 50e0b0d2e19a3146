"""Matrix products: MatMul (constant weight or two activations) and Gemm (§E.3).

    acc[..., n] = Σ_k (a[..., k] − z_a) · (b[k, n] − z_b[n]) + bias[n]       (int32)
    y = clamp(z_y + requantize(acc, M_n, shift_n))                         (§E.2)

``exact_matmul`` is the fast path of every weighted kernel (Conv uses it too): integer
operands summed in float32 BLAS, exact because each partial sum stays below 2^24.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from eightbit.engine.kernels._scratch import scratch
from eightbit.engine.kernels.requantize import Requantization, fits_wide, needs_wide
from eightbit.engine.operands import (
    IntegerConstant,
    IntegerInput,
    NodeToPrepare,
    largest_offset,
    scalar_scale,
    scalar_zero_point,
)
from eightbit.engine.program import Step
from eightbit.fixed import float32_scale_ratio
from eightbit.quant import QuantParams

# Every integer of magnitude <= 2^24 is a float32, so is every partial sum that stays there.
FLOAT32_EXACT = 2**24
FLOAT64_EXACT = 2**53
# Below this many terms per float32 chunk (only 16-bit operands get there: 8-bit chunks
# hold 514 or more), one float64 product is used instead.
_SHORTEST_CHUNK = 64


def exact_matmul(a: np.ndarray, b: np.ndarray, bound: int) -> np.ndarray:
    """``a @ b`` as int64 for integer-valued float32 operands, exactly.

    ``bound`` bounds |a_ik · b_kj|. K is cut into chunks of at most 2^24 / bound terms,
    each summed in float32 (exact: every partial sum is an integer below 2^24), and the
    chunks are added in float64 (exact below 2^53, far above any int32 accumulator).
    """
    depth = a.shape[-1]
    chunk = max(1, FLOAT32_EXACT // max(bound, 1))
    if chunk < _SHORTEST_CHUNK and depth * bound < FLOAT64_EXACT:
        # 16x8 operands (§E.13): a float32 chunk would hold a few terms, while float64
        # holds every partial sum (each at most depth · bound < 2^53) in one product.
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    if depth <= chunk:
        return np.matmul(a, b).astype(np.int64)
    total: np.ndarray | None = None
    for start in range(0, depth, chunk):
        part = np.matmul(a[..., start : start + chunk], b[..., start : start + chunk, :])
        total = part.astype(np.float64) if total is None else total + part
    assert total is not None
    return total.astype(np.int64)


# The fast kernels shift an 8-bit activation into [-128, 127] (x - 128 for uint8, x for
# int8), so |x'| <= SHIFTED_BOUND and a chunk's exactness depends on the weights alone.
SHIFTED_BOUND = 128
_SHIFTS = {np.dtype(np.uint8): 128, np.dtype(np.int8): 0}


def activation_shift(dtype: np.dtype) -> int | None:
    """``s`` with x − s in [−128, 127] for an 8-bit activation type; None for other types."""
    return _SHIFTS.get(np.dtype(dtype))


def exact_ends(weight: np.ndarray, activation_bound: int = SHIFTED_BOUND) -> tuple[int, ...]:
    """Where to cut the reduction (last) axis of ``weight`` (rows × K, integer-valued):
    chunk ends such that ``activation_bound · Σ_{k in chunk} |w[r, k]| <= 2^24`` for every
    row r (a single term that alone is larger gets a chunk of its own).

    Then every partial sum of (row r of the weights) · (a column of activations bounded by
    ``activation_bound``) over a chunk, in any order and any grouping, is an integer of
    magnitude <= 2^24, exact in float32.
    """
    depth = weight.shape[-1]
    rows = np.abs(weight.reshape(-1, depth).astype(np.int64))
    reach_limit = FLOAT32_EXACT // activation_bound
    cumulative = np.cumsum(rows, axis=1)
    ends: list[int] = []
    start = 0
    while start < depth:
        base = cumulative[:, start - 1 : start] if start else 0
        reach = (cumulative[:, start:] - base).max(axis=0)  # nondecreasing along K
        start += max(1, int(np.searchsorted(reach, reach_limit, side="right")))
        ends.append(start)
    return tuple(ends)


def exact_sum(a: np.ndarray, b: np.ndarray, ends: tuple[int, ...], key: str) -> np.ndarray:
    """``a @ b`` for integer-valued float32 operands whose reduction axis is cut at
    ``ends`` (``exact_ends``): each chunk one float32 BLAS call, exact; the chunks added in
    float64 (exact below 2^53). float32 for one chunk, else float64; the result is the
    work buffer ``key`` (valid until the next call with that key)."""
    shape = (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    if len(ends) == 1:
        return np.matmul(a, b, out=scratch(key, shape, np.float32))
    part = scratch(key + ".part", shape, np.float32)
    total = scratch(key, shape, np.float64)
    start = 0
    for index, end in enumerate(ends):
        np.matmul(a[..., start:end], b[..., start:end, :], out=part)
        if index == 0:
            np.copyto(total, part)
        else:
            total += part
        start = end
    return total


def fits_int32(terms: int, bound: int, bias: np.ndarray | None) -> bool:
    """Whether a sum of ``terms`` products bounded by ``bound``, plus ``bias``, is always
    an int32 (then the fast path skips the run-time range check)."""
    largest_bias = 0 if bias is None or bias.size == 0 else int(np.max(np.abs(bias)))
    return terms * bound + largest_bias <= 2**31 - 1


def matmul_accumulate_reference(
    a: np.ndarray, b: np.ndarray, a_zero: np.ndarray | int, b_zero: np.ndarray | int
) -> np.ndarray:
    """The definition: int64 products summed by numpy's plain integer matmul."""
    return np.matmul(a.astype(np.int64) - a_zero, b.astype(np.int64) - b_zero)


def matmul_accumulate(a: np.ndarray, b_centered: np.ndarray, a_zero: int, bound: int) -> np.ndarray:
    """The same sum through ``exact_matmul``; ``b_centered`` is b − z_b as float32."""
    centered = a.astype(np.float32)
    centered -= np.float32(a_zero)
    vector_a, vector_b = centered.ndim == 1, b_centered.ndim == 1
    result = exact_matmul(
        centered[None, :] if vector_a else centered,
        b_centered[:, None] if vector_b else b_centered,
        bound,
    )
    if vector_b:
        result = result[..., 0]
    if vector_a:
        result = result[..., 0, :] if not vector_b else result[..., 0]
    return result


@dataclass(frozen=True, eq=False)
class MatMulStep(Step):
    """``inputs`` = (a,) with a constant ``weight`` [..., K, N], or (a, b) for two activations.

    ``weight_zero`` broadcasts over the weight's last axis; ``bias`` is in the accumulator's
    unit (s_a · s_b[n]) or None.
    """

    weight: np.ndarray | None
    a_zero: int
    weight_zero: np.ndarray
    bias: np.ndarray | None
    transpose_a: bool
    requantization: Requantization
    bound: int

    kind = "MatMul"

    @cached_property
    def _weight_centered(self) -> np.ndarray:
        assert self.weight is not None
        return (self.weight.astype(np.int64) - self.weight_zero).astype(np.float32)

    def _operands(self, args: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        a = np.swapaxes(args[0], -1, -2) if self.transpose_a else args[0]
        return a, (args[1] if self.weight is None else None)

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        a, b = self._operands(args)
        if b is None:
            b_centered = self._weight_centered
        else:
            b_centered = (b.astype(np.int64) - self.weight_zero).astype(np.float32)
        acc = matmul_accumulate(a, b_centered, self.a_zero, self.bound)
        if self.bias is not None:
            acc += self.bias
        bounded = fits_int32(a.shape[-1], self.bound, self.bias)
        return (self.requantization.apply(acc, bounded=bounded),)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        a, b = self._operands(args)
        weight = self.weight if b is None else b
        assert weight is not None
        acc = matmul_accumulate_reference(a, weight, self.a_zero, self.weight_zero)
        if self.bias is not None:
            acc = acc + self.bias
        return (self.requantization.apply_reference(acc),)


def accumulator_bias(
    bias: IntegerConstant, input_scale: float, weight_scales: np.ndarray
) -> np.ndarray:
    """The bias in the accumulator's unit s_x · s_w[c], as int64.

    eightbit's plans store the bias with exactly that scale (float32(s_x · s_w[c])), so the
    stored integers are used as they are. Another scale is converted once, here, by one
    rounding half to even (Prepare may use floats; Eval never does).
    """
    unit = (np.float64(input_scale) * weight_scales.astype(np.float64)).astype(np.float32)
    stored = bias.values.astype(np.int64).reshape(-1)
    scales = np.broadcast_to(bias.params.scale.astype(np.float32), stored.shape)
    if np.array_equal(scales, np.broadcast_to(unit, stored.shape)):
        return stored
    real = stored.astype(np.float64) * scales.astype(np.float64)
    return np.rint(real / (np.float64(input_scale) * weight_scales.astype(np.float64))).astype(
        np.int64
    )


def _column_scales(params: QuantParams, columns: int) -> np.ndarray:
    """A weight's scale for each output column (a per-tensor scale repeated)."""
    return np.broadcast_to(params.scale.astype(np.float64), (columns,))


def prepare_matmul(node: NodeToPrepare) -> MatMulStep:
    """MatMul and Gemm (alpha = beta = 1; the planner keeps other Gemms in float)."""
    is_gemm = node.node.op_type == "Gemm"
    if is_gemm and (node.attr("alpha", 1.0) != 1.0 or node.attr("beta", 1.0) != 1.0):
        raise node.refuse("Gemm with alpha or beta other than 1 has no integer form here")
    a = node.activation(0)
    b = node.integer(1)
    out = node.output(0)
    a_scale = scalar_scale(a.params, "input A", node)
    a_zero = scalar_zero_point(a.params, "input A", node)
    transpose_b = bool(is_gemm and node.attr("transB", 0))
    weight: np.ndarray | None = None
    weight_axis_ok = b.params.axis is None
    if isinstance(b, IntegerConstant):
        weight = np.asarray(b.values)
        if transpose_b:
            weight = np.swapaxes(weight, -1, -2)
        expected_axis = 0 if transpose_b else weight.ndim - 1
        weight_axis_ok = b.params.axis is None or b.params.axis % weight.ndim == expected_axis
        columns = weight.shape[-1]
    else:
        if transpose_b:
            raise node.refuse("Gemm with transB and a run-time B")
        columns = 0
    if not weight_axis_ok:
        raise node.refuse("weight scales must run along the output columns")
    b_scales = b.params.scale.astype(np.float64)
    b_zero = b.params.zero_point.astype(np.int64)
    if b_scales.ndim == 1 and weight is None:
        raise node.refuse("a run-time B must be quantized per tensor")
    bias = None
    bias_operand = node.operand(2) if is_gemm else None
    if bias_operand is not None:
        if not isinstance(bias_operand, IntegerConstant):
            raise node.refuse("Gemm's C must be a quantized constant bias")
        bias = accumulator_bias(bias_operand, a_scale, _column_scales(b.params, columns))
        if bias.size not in (1, columns):
            raise node.refuse(f"bias of {bias.size} values for {columns} columns")
    out_zero = scalar_zero_point(out.params, "the output", node)
    real = float32_scale_ratio(a_scale, b_scales, scalar_scale(out.params, "output", node))
    wide = needs_wide(a.params.dtype, b.params.dtype)
    requantization = Requantization.from_real(
        real, out_zero, out.params.dtype, axis=-1 if real.ndim else None, wide=wide
    )
    bound = largest_offset(a.params) * largest_offset(b.params)
    terms = _reduction_length(node, weight)
    if wide and (terms is None or not fits_wide(terms, bound, bias)):
        raise node.refuse(f"a 16x8 sum of {terms} terms may reach 2^39 (§E.13)")
    b_as_input = b if isinstance(b, IntegerInput) else None
    return MatMulStep(
        node=node.node.name,
        inputs=(a.name,) if b_as_input is None else (a.name, b_as_input.name),
        outputs=(out.name,),
        weight=weight,
        a_zero=a_zero,
        weight_zero=b_zero,
        bias=bias,
        transpose_a=bool(is_gemm and node.attr("transA", 0)),
        requantization=requantization,
        bound=bound,
    )


def _reduction_length(node: NodeToPrepare, weight: np.ndarray | None) -> int | None:
    """K, the number of products in one sum: from the weight, or A's declared shape."""
    if weight is not None:
        return int(weight.shape[-2])
    shape = node.input_shapes[0] if node.input_shapes else None
    transpose_a = node.node.op_type == "Gemm" and node.attr("transA", 0)
    size = None if not shape else shape[-2 if transpose_a else -1]
    return size if isinstance(size, int) else None
