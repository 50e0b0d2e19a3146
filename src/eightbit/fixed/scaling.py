"""Exact integer kernels: rounding, overflow and comparison of ``m · 2^k``.

These functions define the numerics of docs/numerics.md §1.3-1.6. They work on int64 arrays
with shifts of any size (bits above position 63 are copies of the sign bit), never on
floats, and broadcast like numpy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from eightbit.fixed.format import FixedFormat
from eightbit.fixed.inputs import IntArray
from eightbit.fixed.modes import Overflow, Rounding

_ALL_BITS = np.int64(-1)


def _int64(values: npt.ArrayLike) -> IntArray:
    return np.asarray(values, dtype=np.int64)


def _low_bits_nonzero(m: IntArray, width: IntArray) -> npt.NDArray[np.bool_]:
    """Whether any of the low ``width`` bits (width >= 0, any size) of two's complement m is set."""
    mask = ~(_ALL_BITS << np.minimum(width, 63))
    # 64 or more low bits include every bit of m (and copies of its sign): nonzero iff m is.
    return np.where(width >= 64, m != 0, (m & mask) != 0)


def round_shift_right(m: npt.ArrayLike, shift: npt.ArrayLike, rounding: Rounding) -> IntArray:
    """round(m · 2^-shift) for integers m and shifts >= 0, exactly, by ``rounding`` (§1.3)."""
    m, shift = np.broadcast_arrays(_int64(m), _int64(shift))
    floor = m >> np.minimum(shift, 63)
    shifted = shift >= 1
    # r = m·2^-shift - floor; r >= 1/2 iff bit (shift-1) of m is set.
    half_bit = (((m >> np.clip(shift - 1, 0, 63)) & 1) == 1) & shifted
    below_half = _low_bits_nonzero(m, np.maximum(shift - 1, 0)) & shifted
    above = half_bit & below_half
    tie = half_bit & ~below_half
    inexact = half_bit | below_half
    if rounding == "nearest":
        up = half_bit
    elif rounding == "round":
        up = above | (tie & (m > 0))
    elif rounding == "convergent":
        up = above | (tie & ((floor & 1) == 1))
    elif rounding == "floor":
        up = np.zeros_like(half_bit)
    elif rounding == "ceil":
        up = inexact
    else:  # "zero"
        up = inexact & (m < 0)
    return floor + up.astype(np.int64)


def wrap_bits(q: npt.ArrayLike, fmt: FixedFormat) -> IntArray:
    """The integer of ``fmt`` congruent to q modulo 2^word_length (two's complement wrap)."""
    q = _int64(q)
    if fmt.signed:
        unused = 64 - fmt.word_length
        return (q << unused) >> unused  # keep the low w bits, sign-extend bit w-1
    return q & ~(_ALL_BITS << fmt.word_length)


def fit_scaled(
    m: npt.ArrayLike,
    k: npt.ArrayLike,
    fmt: FixedFormat,
    rounding: Rounding,
    overflow: Overflow,
) -> IntArray:
    """Stored integers of ``fmt`` for the real values m · 2^k: round, then saturate or wrap (§1.4).

    ``m · 2^k`` is the ideal stored value (already in units of fmt's LSB): for a float
    ``x = M · 2^E`` it is ``M · 2^(E + f)``; for a stored integer of fraction length f0 it
    is ``q · 2^(f - f0)``.
    """
    m, k = np.broadcast_arrays(_int64(m), _int64(k))
    base = round_shift_right(m, np.maximum(-k, 0), rounding)
    shift = np.maximum(k, 0)  # the value is now base · 2^shift, an integer
    clipped = np.minimum(shift, 63)
    if overflow == "wrap":
        # 64-bit wrap-around is congruent modulo 2^w because w <= 64.
        return wrap_bits(np.where(shift >= 64, 0, base << clipped), fmt)
    max_int, min_int = np.int64(fmt.max_int), np.int64(fmt.min_int)
    # Decide overflow before shifting: base·2^s > max  iff  base > ⌊max / 2^s⌋, and
    # base·2^s < min  iff  base < ⌈min / 2^s⌉, which is min >> s while s <= w-1
    # (an exact division of -2^(w-1)) and 0 beyond.
    too_high = base > (max_int >> clipped)
    too_low = base < np.where(shift <= fmt.word_length - 1, min_int >> clipped, 0)
    in_range = np.where(too_high | too_low, 0, base) << clipped
    return np.where(too_high, max_int, np.where(too_low, min_int, in_range))


def _compare_to_shifted(
    x: IntArray, y: IntArray, d: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(x < y · 2^d, x == y · 2^d) for d >= 0, without forming y · 2^d (§1.6)."""
    quotient = x >> min(d, 63)  # ⌊x / 2^d⌋, also for d >= 64 since |x| <= 2^63
    remainder_nonzero = _low_bits_nonzero(x, _int64(d))
    return quotient < y, (quotient == y) & ~remainder_nonzero


def compare_scaled(
    qa: npt.ArrayLike, fa: int, qb: npt.ArrayLike, fb: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(a < b, a == b) for the real values a = qa · 2^-fa and b = qb · 2^-fb, exactly."""
    qa, qb = np.broadcast_arrays(_int64(qa), _int64(qb))
    if fa >= fb:
        return _compare_to_shifted(qa, qb, fa - fb)
    b_less, equal = _compare_to_shifted(qb, qa, fb - fa)
    return ~b_less & ~equal, equal
