"""Integer requantization: a real multiplier as an int32 multiplier and a shift.

The one definition the integer engine and the generated C share (docs/numerics.md §1.8):
``y = round_half_even(acc · M · 2^(shift - 31))``, a single rounding of the exact product,
ties to even (the ``convergent`` mode), as ONNX QuantizeLinear and ONNX Runtime round.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from eightbit.errors import FixedPointError
from eightbit.fixed.inputs import IntArray
from eightbit.fixed.modes import Rounding
from eightbit.fixed.scaling import round_shift_right

# The requantization rounding rule (§1.8): ties to even. Power-of-two scales make exact
# ties common (a 2x2 average, an Add of equal scales), so a tie rule biased toward +inf
# drifts by whole LSBs through a network; ties to even is unbiased and is what ONNX does.
REQUANTIZE_ROUNDING: Rounding = "convergent"

MULTIPLIER_BITS = 31
MAX_SHIFT = 31  # real multipliers below 2^31: t = 31 - shift >= 0 is always a right shift
MIN_SHIFT = -(2**31)  # far below any float64 (2^-1074); keeps 31 - shift inside int64
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """(M, shift) with M in [2^30, 2^31) and real ≈ M · 2^-31 · 2^shift (relative error <= 2^-31).

    0 gives (0, 0). Negative, non-finite and too large (>= 2^31) multipliers are refused.
    """
    real = float(real_multiplier)
    if not math.isfinite(real) or real < 0:
        raise FixedPointError(
            f"real multiplier must be a finite number >= 0 (got {real_multiplier!r}); "
            "scales are positive, so their ratio is too"
        )
    if real == 0:
        return 0, 0
    mantissa, exponent = math.frexp(real)  # real = mantissa · 2^exponent, mantissa in [1/2, 1)
    significand = int(math.ldexp(mantissa, 53))  # exact 53-bit integer
    multiplier = int(round_shift_right(significand, 53 - MULTIPLIER_BITS, "nearest"))
    if multiplier == 1 << MULTIPLIER_BITS:  # mantissa rounded up to 1.0
        multiplier, exponent = 1 << (MULTIPLIER_BITS - 1), exponent + 1
    if exponent > MAX_SHIFT:
        raise FixedPointError(
            f"real multiplier {real!r} is too large: requantization supports multipliers "
            f"below 2^{MAX_SHIFT}; check the scales that produced it"
        )
    return multiplier, exponent


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


def requantize(acc: npt.ArrayLike, multiplier: npt.ArrayLike, shift: npt.ArrayLike) -> IntArray:
    """round_half_even(acc · M · 2^(shift - 31)) as int64, exactly.

    ``acc`` holds int32 values (any integer dtype); ``multiplier`` and ``shift`` come from
    ``quantize_multiplier`` and broadcast against ``acc`` (per-channel arrays shaped for
    the channel axis). The product acc · M < 2^62 is formed in int64 and rounded once.
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
    product = accumulators * multipliers
    return round_shift_right(product, MULTIPLIER_BITS - shifts, REQUANTIZE_ROUNDING)
