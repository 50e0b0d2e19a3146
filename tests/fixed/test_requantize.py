"""quantize_multiplier and requantize against exact rationals and IEEE float32.

The oracle is the float32 semantics itself, built from ``Fraction``: ``float32_round``
rounds a rational to the nearest binary32 number (24 significant bits, subnormals on the
2^-149 grid, ties to even), written from IEEE 754, not from the integer steps the library
takes. ONNX Runtime computes ``nearbyint(float(acc) * scale)``; ``requantize`` must equal it.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.errors import FixedPointError
from eightbit.fixed import (
    FixedArray,
    FixedFormat,
    float32_scale_ratio,
    quantize_multiplier,
    requantize,
    requantize_int,
)
from eightbit.fixed.requantize import bit_length, round_significant, round_significant_array
from tests.fixed.reference import PROPERTY, float32_round, half_even, requantize_float32

INT32 = st.integers(-(2**31), 2**31 - 1)
ACCUMULATORS = st.one_of(
    INT32,
    st.integers(-(2**25), 2**25),  # around float32's 2^24: acc itself rounds
    st.sampled_from([-(2**31), 2**31 - 1, 2**24 + 1, 2**24 + 3, -(2**24) - 1, -1, 0, 1]),
)
MULTIPLIERS = st.one_of(
    st.integers(2**23, 2**24 - 1), st.sampled_from([0, 2**23, 2**23 + 1, 2**24 - 1])
)
# (MIN_SHIFT = -2^31 is covered by test_tiny_multipliers_give_zero: 2^(shift-24) as a
# Fraction would be a two-gigabit integer.)
SHIFTS = st.one_of(st.integers(-160, 31), st.sampled_from([-500, -126, 0, 24, 31]))
# Every non-negative float32 scale requantization accepts, subnormals included.
FLOAT32_SCALES = st.floats(min_value=0.0, max_value=2.0**31, width=32, exclude_max=True)


@pytest.mark.parametrize(
    ("real", "expected"),
    [
        (0.5, (2**23, 0)),
        (1.0, (2**23, 1)),
        (0.25, (2**23, -1)),
        (0.1, (13421773, -3)),  # float32(0.1) = 13421773 · 2^-27
        (0.0, (0, 0)),
        (1 - 2.0**-40, (2**23, 1)),  # rounds to float32 1.0
        (2.0**30, (2**23, 31)),
        (2.0**-149, (2**23, -148)),  # the smallest subnormal, normalized
        (2.0**-1074, (0, 0)),  # no float32 but 0
    ],
)
def test_quantize_multiplier_golden(real: float, expected: tuple[int, int]) -> None:
    assert quantize_multiplier(real) == expected


@pytest.mark.parametrize("real", [-0.5, math.nan, math.inf, 2.0**31, 2.0**31 - 2.0**-22])
def test_quantize_multiplier_refuses(real: float) -> None:
    with pytest.raises(FixedPointError, match="multiplier"):
        quantize_multiplier(real)


@PROPERTY
@given(real=st.floats(min_value=2.0**-149, max_value=2.0**31 - 2.0**7))  # float32 < 2^31
def test_multiplier_is_the_float32_scale_exactly(real: float) -> None:
    multiplier, shift = quantize_multiplier(real)
    single = Fraction(float(np.float32(real)))
    if single == 0:
        assert (multiplier, shift) == (0, 0)
        return
    assert 2**23 <= multiplier < 2**24
    assert Fraction(multiplier) * Fraction(2) ** (shift - 24) == single
    assert single == float32_round(Fraction(real))


def test_scale_ratio_is_float32_in_onnxruntimes_order() -> None:
    # (s_x · s_w) / s_y with a rounding after each operation, as C++ float does.
    x, w, y = np.float32(0.0123), np.float32([0.0071, 3e-5]), np.float32(0.0417)
    got = float32_scale_ratio(x, w, y)
    assert got.dtype == np.float32
    for value, weight in zip(got.tolist(), w.tolist(), strict=True):
        product = float32_round(Fraction(float(x)) * Fraction(weight))
        assert Fraction(value) == float32_round(product / Fraction(float(y)))


@PROPERTY
@given(acc=st.lists(ACCUMULATORS, min_size=1, max_size=8), multiplier=MULTIPLIERS, shift=SHIFTS)
def test_requantize_is_float32_arithmetic(acc: list[int], multiplier: int, shift: int) -> None:
    got = requantize(np.array(acc, dtype=np.int64), multiplier, shift)
    assert got.dtype == np.int64
    want = [requantize_float32(a, multiplier, shift) for a in acc]
    assert got.tolist() == want
    assert [requantize_int(a, multiplier, shift) for a in acc] == want


@PROPERTY
@given(acc=st.lists(ACCUMULATORS, min_size=1, max_size=16), scale=FLOAT32_SCALES)
def test_requantize_equals_numpy_float32(acc: list[int], scale: float) -> None:
    """What ONNX Runtime's MLAS does, cvtdq2ps · mulps · cvtps2dq, in numpy float32."""
    multiplier, shift = quantize_multiplier(scale)
    values = np.array(acc, dtype=np.int64)
    ort = np.rint(values.astype(np.float32) * np.float32(scale)).astype(np.int64)
    np.testing.assert_array_equal(requantize(values, multiplier, shift), ort)


@PROPERTY
@given(value=st.one_of(st.integers(-(2**62) + 1, 2**62 - 1), st.integers(-(2**26), 2**26)))
def test_round_significant_is_float32_for_integers(value: int) -> None:
    want = float32_round(Fraction(value))
    assert round_significant(value) == want
    assert int(round_significant_array(np.array([value]))[0]) == want


def test_bit_length_at_every_power_of_two() -> None:
    values = [v for k in range(63) for v in (2**k - 1, 2**k, 2**k + 1) if v < 2**63]
    got = bit_length(np.array(values, dtype=np.int64)).tolist()
    assert got == [v.bit_length() for v in values]


@PROPERTY
@given(acc=st.lists(ACCUMULATORS, min_size=1, max_size=8), n=st.integers(0, 70))
def test_power_of_two_multiplier_is_a_shift_of_float32_acc(acc: list[int], n: int) -> None:
    """μ = 2^-n gives M = 2^23: float32(acc) shifted right by n, ties to even."""
    multiplier, shift = quantize_multiplier(2.0**-n)
    assert multiplier == 2**23
    got = requantize(np.array(acc, dtype=np.int64), multiplier, shift).tolist()
    assert got == [half_even(float32_round(Fraction(a)) / 2**n) for a in acc]
    small = [a for a in acc if abs(a) < 2**24]  # float32(acc) = acc: the convergent cast
    if small:
        as_fixed = FixedArray(np.array(small, dtype=np.int64), FixedFormat(32, 0))
        shifted = as_fixed.cast(FixedFormat(64, -n), "convergent").stored.tolist()
        assert requantize(np.array(small), multiplier, shift).tolist() == shifted


def test_ties_go_to_even() -> None:
    multiplier, shift = quantize_multiplier(0.5)
    # 2.5, -2.5, 1.5, -1.5, 0.5, -0.5, 3.5 -> the even neighbour
    acc = np.array([5, -5, 3, -3, 1, -1, 7])
    assert requantize(acc, multiplier, shift).tolist() == [2, -2, 2, -2, 0, 0, 4]


def test_two_roundings_differ_from_one() -> None:
    """Where float32 rounding of the product moves it across a half: the double rounding
    ONNX Runtime performs, not the exact product's rounding."""
    multiplier, shift = quantize_multiplier(np.float32(1.0) + np.float32(2.0**-23))
    acc = 2**23 + 1  # exact acc · S = 2^23 + 2 + 2^-23: float32 rounds it to 2^23 + 2
    assert requantize(np.array([acc]), multiplier, shift).tolist() == [2**23 + 2]
    multiplier, shift = quantize_multiplier(np.float32(0.5) * (1 + np.float32(2.0**-23)))
    acc = 2**22 + 1  # exact: 2^21 + 0.5 + 2^-2 + tiny -> float32 2^21 + 1 -> 2^21 + 1
    got = requantize(np.array([acc]), multiplier, shift).tolist()
    assert got == [requantize_float32(acc, multiplier, shift)]


def test_per_channel_multipliers_broadcast() -> None:
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**31), 2**31, size=(5, 3), dtype=np.int64)
    pairs = [quantize_multiplier(r) for r in (0.003, 0.75, 1.5)]
    multipliers = np.array([m for m, _ in pairs])
    shifts = np.array([s for _, s in pairs])
    got = requantize(acc, multipliers, shifts)
    for channel, (m, s) in enumerate(pairs):
        assert got[:, channel].tolist() == requantize(acc[:, channel], m, s).tolist()
        want = [requantize_float32(int(a), m, s) for a in acc[:, channel]]
        assert got[:, channel].tolist() == want


def test_tiny_multipliers_give_zero_for_every_int32() -> None:
    extremes = np.array([-(2**31), -1, 0, 1, 2**31 - 1])
    for shift in (-32, -200, -(2**31)):
        assert requantize(extremes, 2**24 - 1, shift).tolist() == [0] * 5


def test_multipliers_above_2_to_24_shift_left() -> None:
    multiplier, shift = quantize_multiplier(2.0**30)
    assert requantize(np.array([1, -3, 0]), multiplier, shift).tolist() == [2**30, -3 * 2**30, 0]


@pytest.mark.parametrize(
    ("acc", "multiplier", "shift", "message"),
    [
        (np.array([2**31]), 2**23, 0, r"'acc' must lie in \[-2147483648, 2147483647\]"),
        (np.array([0.5]), 2**23, 0, "'acc' must be an integer array"),
        (np.array([1]), 2**24, 0, r"'multiplier' must lie in \[0, 16777215\]"),
        (np.array([1]), -1, 0, "'multiplier' must lie"),
        (np.array([1]), 2**23, 32, r"'shift' must lie in \[-2147483648, 31\]"),
        (np.ones((2, 3), dtype=np.int32), np.ones(2, dtype=np.int64), 0, "do not broadcast"),
    ],
)
def test_requantize_refuses(acc: object, multiplier: object, shift: object, message: str) -> None:
    with pytest.raises(FixedPointError, match=message):
        requantize(acc, multiplier, shift)  # type: ignore[arg-type]
