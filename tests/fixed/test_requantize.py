"""quantize_multiplier and requantize against exact rationals."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.errors import FixedPointError
from eightbit.fixed import FixedArray, FixedFormat, quantize_multiplier, requantize
from tests.fixed.reference import PROPERTY

INT32 = st.integers(-(2**31), 2**31 - 1)


@pytest.mark.parametrize(
    ("real", "expected"),
    [
        (0.5, (2**30, 0)),
        (1.0, (2**30, 1)),
        (0.25, (2**30, -1)),
        (0.1, (1717986918, -3)),  # 0.8 · 2^31 = 1717986918.4
        (0.0, (0, 0)),
        (1 - 2.0**-40, (2**30, 1)),  # the mantissa rounds up to 1.0
        (2.0**31 - 1, (2**31 - 1, 31)),
        (2.0**-1074, (2**30, -1073)),
    ],
)
def test_quantize_multiplier_golden(real: float, expected: tuple[int, int]) -> None:
    assert quantize_multiplier(real) == expected


@pytest.mark.parametrize("real", [-0.5, math.nan, math.inf, 2.0**31, 2.0**31 - 2.0**-22])
def test_quantize_multiplier_refuses(real: float) -> None:
    with pytest.raises(FixedPointError, match="multiplier"):
        quantize_multiplier(real)


@PROPERTY
@given(real=st.floats(min_value=2.0**-1074, max_value=2.0**31 - 1))
def test_multiplier_relative_error_is_at_most_2_to_minus_31(real: float) -> None:
    multiplier, shift = quantize_multiplier(real)
    assert 2**30 <= multiplier < 2**31
    approximation = Fraction(multiplier) * Fraction(2) ** (shift - 31)
    assert abs(approximation - Fraction(real)) <= Fraction(real) * Fraction(1, 2**31)


def requantize_exact(acc: int, multiplier: int, shift: int) -> int:
    """round(acc · M · 2^(shift - 31)), ties to even (Python's round of a Fraction)."""
    return round(Fraction(acc * multiplier) * Fraction(2) ** (shift - 31))


@PROPERTY
@given(
    acc=st.lists(INT32, min_size=1, max_size=8),
    multiplier=st.one_of(st.integers(2**30, 2**31 - 1), st.sampled_from([0, 2**30, 2**31 - 1])),
    shift=st.one_of(st.integers(-40, 31), st.sampled_from([-31, -32, -33, -1000])),
)
def test_requantize_is_one_exact_rounding(acc: list[int], multiplier: int, shift: int) -> None:
    got = requantize(np.array(acc, dtype=np.int32), multiplier, shift)
    assert got.dtype == np.int64
    assert got.tolist() == [requantize_exact(a, multiplier, shift) for a in acc]


@PROPERTY
@given(acc=st.lists(INT32, min_size=1, max_size=8), n=st.integers(0, 70))
def test_power_of_two_multiplier_is_an_arithmetic_shift(acc: list[int], n: int) -> None:
    """μ = 2^-n gives M = 2^30: an arithmetic shift by n, ties to even (the convergent cast)."""
    multiplier, shift = quantize_multiplier(2.0**-n)
    assert multiplier == 2**30
    got = requantize(np.array(acc, dtype=np.int64), multiplier, shift).tolist()
    shifted = [round(Fraction(a, 1 << n)) for a in acc]
    assert got == shifted
    as_fixed = FixedArray(np.array(acc, dtype=np.int64), FixedFormat(32, 0))
    assert as_fixed.cast(FixedFormat(64, -n), "convergent").stored.tolist() == shifted


def test_ties_go_to_even() -> None:
    multiplier, shift = quantize_multiplier(0.5)
    # 2.5, -2.5, 1.5, -1.5, 0.5, -0.5, 3.5 -> the even neighbour
    acc = np.array([5, -5, 3, -3, 1, -1, 7])
    assert requantize(acc, multiplier, shift).tolist() == [2, -2, 2, -2, 0, 0, 4]


def test_per_channel_multipliers_broadcast() -> None:
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**31), 2**31, size=(5, 3), dtype=np.int64)
    pairs = [quantize_multiplier(r) for r in (0.003, 0.75, 1.5)]
    multipliers = np.array([m for m, _ in pairs])
    shifts = np.array([s for _, s in pairs])
    got = requantize(acc, multipliers, shifts)
    for channel, (m, s) in enumerate(pairs):
        assert got[:, channel].tolist() == requantize(acc[:, channel], m, s).tolist()
        assert got[:, channel].tolist() == [requantize_exact(int(a), m, s) for a in acc[:, channel]]


def test_tiny_multipliers_give_zero_for_every_int32() -> None:
    multiplier, shift = quantize_multiplier(1e-300)
    extremes = np.array([-(2**31), -1, 0, 1, 2**31 - 1])
    assert requantize(extremes, multiplier, shift).tolist() == [0] * 5


@pytest.mark.parametrize(
    ("acc", "multiplier", "shift", "message"),
    [
        (np.array([2**31]), 2**30, 0, r"'acc' must lie in \[-2147483648, 2147483647\]"),
        (np.array([0.5]), 2**30, 0, "'acc' must be an integer array"),
        (np.array([1]), 2**31, 0, r"'multiplier' must lie in \[0, 2147483647\]"),
        (np.array([1]), -1, 0, "'multiplier' must lie"),
        (np.array([1]), 2**30, 32, r"'shift' must lie in \[-2147483648, 31\]"),
        (np.ones((2, 3), dtype=np.int32), np.ones(2, dtype=np.int64), 0, "do not broadcast"),
    ],
)
def test_requantize_refuses(acc: object, multiplier: object, shift: object, message: str) -> None:
    with pytest.raises(FixedPointError, match=message):
        requantize(acc, multiplier, shift)  # type: ignore[arg-type]
