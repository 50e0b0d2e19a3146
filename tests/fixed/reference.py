"""Independent oracle for the fixed-point core: exact rationals and Python ints only.

Written from the definitions in docs/numerics.md §1, not from the bit manipulations the
library uses, so that a test comparing the two can fail.
"""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import settings
from hypothesis import strategies as st

from eightbit.fixed import FixedFormat

# Shared CPU: a slow example is not a failure.
PROPERTY = settings(deadline=None, max_examples=150)

HALF = Fraction(1, 2)


def round_exact(t: Fraction, rounding: str) -> int:
    """The integer the rounding mode picks for the exact rational t."""
    if rounding == "floor":
        return math.floor(t)
    if rounding == "ceil":
        return math.ceil(t)
    if rounding == "zero":
        return math.trunc(t)
    if rounding == "nearest":  # ties toward +inf
        return math.floor(t + HALF)
    if rounding == "round":  # ties away from zero
        magnitude = math.floor(abs(t) + HALF)
        return magnitude if t >= 0 else -magnitude
    if rounding == "convergent":  # ties to even: Python's round() on a Fraction
        return round(t)
    raise AssertionError(rounding)


def overflow_exact(q: int, fmt: FixedFormat, overflow: str) -> int:
    if overflow == "saturate":
        return min(max(q, fmt.min_int), fmt.max_int)
    span = 1 << fmt.word_length
    return (q - fmt.min_int) % span + fmt.min_int


def quantize_exact(x: float | int, fmt: FixedFormat, rounding: str, overflow: str) -> int:
    """Stored integer of x in fmt: one exact rounding, then saturate or wrap."""
    if isinstance(x, float) and math.isinf(x):
        return fmt.max_int if x > 0 else fmt.min_int
    scaled = Fraction(x) * Fraction(2) ** fmt.fraction_length
    return overflow_exact(round_exact(scaled, rounding), fmt, overflow)


def value_exact(q: int, fmt: FixedFormat) -> Fraction:
    return q * Fraction(2) ** -fmt.fraction_length


ROUNDINGS = ["nearest", "round", "convergent", "floor", "ceil", "zero"]
OVERFLOWS = ["saturate", "wrap"]

roundings = st.sampled_from(ROUNDINGS)
overflows = st.sampled_from(OVERFLOWS)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
int64s = st.one_of(st.integers(-4, 4), st.integers(-(2**63), 2**63 - 1))
word_lengths = st.one_of(st.sampled_from([8, 16, 32]), st.integers(2, 64))
fraction_lengths = st.one_of(
    st.integers(-40, 80), st.sampled_from([-2000, -1100, 1074, 1100, 2000])
)


@st.composite
def formats(draw: st.DrawFn) -> FixedFormat:
    signed = draw(st.booleans())
    word_length = draw(word_lengths)
    if not signed:
        word_length = min(word_length, 63)
    # Fraction lengths near ±w put integers right at the shift and overflow boundaries.
    side = draw(st.sampled_from([1, -1]))
    near_word = st.integers(-2, 2).map(lambda d: side * word_length + d)
    fraction_length = draw(st.one_of(fraction_lengths, near_word))
    return FixedFormat(word_length, fraction_length, signed)


def _ldexp(mantissa: float, exponent: int) -> float:
    try:
        return math.ldexp(mantissa, exponent)
    except OverflowError:
        return 0.0


@st.composite
def values_near(draw: st.DrawFn, fmt: FixedFormat) -> float:
    """Floats that matter for fmt: exact ties, near-ties and values around the range limits."""
    f = fmt.fraction_length
    n = draw(st.integers(-(2**52), 2**52))
    kind = draw(st.sampled_from(["tie", "lsb", "edge", "any"]))
    if kind == "tie":  # (2n + 1) / 2 LSB: exact when it fits 53 bits and float range
        candidate = _ldexp(float(2 * (n >> 1) + 1), -f - 1)
    elif kind == "lsb":  # a value on the grid, nudged by a fraction of an LSB
        candidate = _ldexp(float(n >> draw(st.integers(0, 52))), -f) * (
            1 + draw(st.sampled_from([0.0, 1e-16, -1e-16, 0.25, -0.25]))
        )
    elif kind == "edge":
        bound = float(draw(st.sampled_from([fmt.max_int, fmt.min_int])))
        candidate = _ldexp(bound + draw(st.sampled_from([-1.5, -0.5, 0.0, 0.5, 1.0])), -f)
    else:
        candidate = draw(finite_floats)
    return candidate if math.isfinite(candidate) else 0.0


# float32 requantization, as ONNX Runtime computes it (docs/numerics.md §1.8).


def half_even(value: Fraction) -> int:
    """The integer nearest to value, ties to the even neighbour."""
    low = math.floor(value)
    rest = value - low
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and low % 2 == 1):
        return low + 1
    return low


def float32_round(value: Fraction) -> Fraction:
    """The binary32 number nearest to ``value``, ties to even (no overflow: |value| < 2^127)."""
    if value == 0:
        return value
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1  # now 2^exponent <= magnitude < 2^(exponent+1)
    quantum = Fraction(2) ** (max(exponent, -126) - 23)  # subnormals: a fixed 2^-149 grid
    rounded = half_even(magnitude / quantum) * quantum
    return rounded if value > 0 else -rounded


def requantize_float32(acc: int, multiplier: int, shift: int) -> int:
    """nearbyint(float32(float32(acc) · S)) with S = M · 2^(shift − 24), in rationals."""
    scale = Fraction(multiplier) * Fraction(2) ** (shift - 24)
    return half_even(float32_round(float32_round(Fraction(acc)) * scale))
