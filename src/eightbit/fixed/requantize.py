"""Integer requantization: ONNX Runtime's float32 rescaling, computed with integers.

The one definition the integer engine and the generated C share (docs/numerics.md §1.8).
A real multiplier is a float32 scale ``S = M · 2^(shift − 24)`` with ``M`` its 24-bit
significand (an int32 in [2^23, 2^24)) and ``shift`` its exponent. An int32 accumulator
becomes

    y = round_half_even(round24(round24(acc) · M) · 2^(shift − 24))

where ``round24`` rounds an integer to 24 significant bits, ties to even. That is, bit for
bit, what ONNX Runtime's MLAS computes in float32, ``nearbyint(float(acc) * S)``:
``float(acc)`` is acc rounded to 24 significant bits, the float32 product is the exact
product rounded to 24 significant bits (scaling by 2^(shift − 24) commutes with that
rounding), and cvtps2dq/nearbyint rounds half to even. Two cases float32 treats apart give
the same integers: a product below 2^−126 (subnormal) is below 1/2 either way and rounds to
0, and no int32 accumulator times a scale below 2^31 reaches float32's overflow.

``requantize_int`` is the definition in Python integers; ``requantize`` is the same rule on
int64 arrays (|acc · M| < 2^31 · 2^24 = 2^55, shifted left by at most 7 bits).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from eightbit.errors import FixedPointError
from eightbit.fixed.inputs import IntArray
from eightbit.fixed.modes import Rounding

# The requantization rounding rule (§1.8): ties to even, at both roundings (float32's
# round-to-nearest-even, then nearbyint). Power-of-two scales make exact ties common (a 2x2
# average, an Add of equal scales); ties to even is unbiased and is what ONNX does.
REQUANTIZE_ROUNDING: Rounding = "convergent"

MULTIPLIER_BITS = 24  # the float32 significand, hidden bit included
MAX_SHIFT = 31  # real multipliers below 2^31: t = 24 - shift >= -7 (a left shift below 0)
MIN_SHIFT = -(2**31)  # far below any float32 (2^-149); keeps 24 - shift inside int64
# t above this leaves |round24(acc) · M| < 2^55 below 2^-8: every result is 0.
_LARGEST_RIGHT_SHIFT = 63
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """(M, shift) with M in [2^23, 2^24) and M · 2^(shift − 24) = float32(real), exactly.

    The real is rounded to float32 first (ties to even), as ONNX Runtime stores its scale;
    pass a float32 scale computed in ONNX Runtime's order (``float32_scale_ratio``) for an
    exact match. 0 gives (0, 0). Negative, non-finite and too large (>= 2^31) multipliers
    are refused.
    """
    real = float(real_multiplier)
    if not math.isfinite(real) or real < 0:
        raise FixedPointError(
            f"real multiplier must be a finite number >= 0 (got {real_multiplier!r}); "
            "scales are positive, so their ratio is too"
        )
    single = float(np.float32(real))
    if single == 0:
        return 0, 0
    mantissa, exponent = math.frexp(single)  # single = mantissa · 2^exponent, in [1/2, 1)
    multiplier = int(math.ldexp(mantissa, MULTIPLIER_BITS))  # exact: float32 has 24 bits
    if exponent > MAX_SHIFT:
        raise FixedPointError(
            f"real multiplier {real!r} is too large: requantization supports multipliers "
            f"below 2^{MAX_SHIFT}; check the scales that produced it"
        )
    return multiplier, exponent


def float32_scale_ratio(
    input_scale: npt.ArrayLike, weight_scale: npt.ArrayLike, output_scale: npt.ArrayLike
) -> np.ndarray:
    """``(s_x · s_w) / s_y`` in float32, in that order: ONNX Runtime's QLinearConv,
    QLinearMatMul and QGemm output scale (``X_scale * W_scale / Y_scale`` in C++ float)."""
    x = np.asarray(input_scale, dtype=np.float32)
    w = np.asarray(weight_scale, dtype=np.float32)
    y = np.asarray(output_scale, dtype=np.float32)
    return np.asarray(np.divide(np.multiply(x, w, dtype=np.float32), y, dtype=np.float32))


def round_significant(value: int, bits: int = MULTIPLIER_BITS) -> int:
    """``value`` rounded to ``bits`` significant bits, ties to even (float32 for 24)."""
    magnitude = abs(value)
    extra = magnitude.bit_length() - bits
    if extra <= 0:
        return value
    rounded = _round_half_even_right(magnitude, extra) << extra
    return rounded if value >= 0 else -rounded


def _round_half_even_right(value: int, t: int) -> int:
    """round_half_even(value / 2^t) for t >= 0 (a left shift for t < 0)."""
    if t <= 0:
        return value << -t
    quotient, remainder = divmod(value, 1 << t)  # floor division: remainder >= 0
    half = 1 << (t - 1)
    if remainder > half or (remainder == half and quotient & 1):
        quotient += 1
    return quotient


def requantize_int(acc: int, multiplier: int, shift: int) -> int:
    """The definition: round_half_even(round24(round24(acc) · M) · 2^(shift − 24))."""
    product = round_significant(round_significant(acc) * multiplier)
    return _round_half_even_right(product, MULTIPLIER_BITS - shift)


def _integer_array(values: npt.ArrayLike, name: str) -> IntArray:
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        raise FixedPointError(f"'{name}' must be an integer array (got dtype {array.dtype})")
    if array.dtype == np.uint64 and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise FixedPointError(f"'{name}' has values above the int64 range")
    return array.astype(np.int64)


def _check_range(values: IntArray, name: str, low: int, high: int, hint: str) -> None:
    outside = (values < low) | (values > high)
    if outside.any():
        bad = values.flat[int(np.flatnonzero(outside)[0])]
        raise FixedPointError(f"'{name}' must lie in [{low}, {high}] (got {bad}); {hint}")


def bit_length(magnitude: IntArray) -> IntArray:
    """``int.bit_length`` of each non-negative int64 (< 2^63)."""
    _, exponent = np.frexp(magnitude.astype(np.float64))
    exponent = exponent.astype(np.int64)
    # float64 rounds a value just below 2^k up to 2^k, one bit too many: take it back.
    too_long = (exponent > 0) & (
        np.left_shift(np.int64(1), np.maximum(exponent - 1, 0)) > magnitude
    )
    return exponent - too_long


def round_half_even_right(values: IntArray, t: IntArray) -> IntArray:
    """round_half_even(values / 2^t) for int64 values and shifts 0 <= t <= 63."""
    t = np.asarray(t, dtype=np.int64)
    shifted = t >= 1
    below_half = np.where(shifted, np.left_shift(np.int64(1), np.maximum(t - 1, 0)) - 1, 0)
    odd = np.where(shifted, np.right_shift(values, t) & 1, 0)
    # values = floor·2^t + r: adding 2^(t-1) - 1 carries into floor when r > 2^(t-1), and
    # floor's parity bit decides r = 2^(t-1). |values| < 2^62: no overflow.
    return np.asarray(np.right_shift(values + below_half + odd, t))


def round_significant_array(values: IntArray, bits: int = MULTIPLIER_BITS) -> IntArray:
    """``round_significant`` of each int64 (|value| < 2^62)."""
    magnitude = np.abs(values)
    extra = np.maximum(bit_length(magnitude) - bits, 0)
    rounded = np.left_shift(round_half_even_right(magnitude, extra), extra)
    return np.asarray(np.where(values < 0, -rounded, rounded))


def requantize(acc: npt.ArrayLike, multiplier: npt.ArrayLike, shift: npt.ArrayLike) -> IntArray:
    """``requantize_int`` of every element, as int64, in int64 arithmetic.

    ``acc`` holds int32 values (any integer dtype); ``multiplier`` and ``shift`` come from
    ``quantize_multiplier`` and broadcast against ``acc`` (per-channel arrays shaped for
    the channel axis).
    """
    accumulators = _integer_array(acc, "acc")
    multipliers = _integer_array(multiplier, "multiplier")
    shifts = _integer_array(shift, "shift")
    _check_range(accumulators, "acc", _INT32_MIN, _INT32_MAX, "accumulators are int32")
    _check_range(multipliers, "multiplier", 0, 2**MULTIPLIER_BITS - 1, "use quantize_multiplier()")
    _check_range(shifts, "shift", MIN_SHIFT, MAX_SHIFT, "use quantize_multiplier()")
    try:
        np.broadcast_shapes(accumulators.shape, multipliers.shape, shifts.shape)
    except ValueError:
        raise FixedPointError(
            f"'multiplier' {multipliers.shape} and 'shift' {shifts.shape} do not broadcast "
            f"against 'acc' {accumulators.shape}; shape per-channel arrays for the channel axis"
        ) from None
    product = round_significant_array(round_significant_array(accumulators) * multipliers)
    t = np.minimum(MULTIPLIER_BITS - shifts, _LARGEST_RIGHT_SHIFT)
    # t < 0 (multipliers of 2^24 and more): an exact left shift, |product| · 2^7 < 2^62.
    product = np.left_shift(product, np.maximum(-t, 0))
    return round_half_even_right(product, np.maximum(t, 0))
