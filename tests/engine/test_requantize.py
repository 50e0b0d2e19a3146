"""The engine's requantization against exact rationals, and its fast form against the definition."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.engine.kernels.requantize import (
    Requantization,
    Rescale,
    requantize_reference,
)
from eightbit.errors import ModelError
from eightbit.fixed import quantize_multiplier
from tests.engine.helpers import PROPERTY

INT32 = st.integers(-(2**31), 2**31 - 1)
ACCUMULATORS = st.one_of(INT32, st.sampled_from([-(2**31), 2**31 - 1, -1, 0, 1]))
MULTIPLIERS = st.one_of(st.integers(2**30, 2**31 - 1), st.sampled_from([0, 1, 2**30, 2**31 - 1]))
# Fraction's 2^(shift-31) stays cheap down here; below, every result is 0 (tested apart).
SHIFTS = st.one_of(st.integers(-70, 31), st.sampled_from([-70, -33, -32, 0, 30, 31]))


def half_even(value: Fraction) -> int:
    """The integer nearest to value, ties to the even neighbour: the definition."""
    low = math.floor(value)
    rest = value - low
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and low % 2 == 1):
        return low + 1
    return low


@PROPERTY
@given(acc=st.lists(ACCUMULATORS, min_size=1, max_size=6), multiplier=MULTIPLIERS, shift=SHIFTS)
def test_reference_is_the_exact_product_rounded_half_to_even(
    acc: list[int], multiplier: int, shift: int
) -> None:
    result = requantize_reference(np.array(acc), multiplier, shift)
    for value, got in zip(acc, result.tolist(), strict=True):
        exact = Fraction(value * multiplier) * Fraction(2) ** (shift - 31)
        assert got == half_even(exact)


@PROPERTY
@given(acc=st.lists(ACCUMULATORS, min_size=1, max_size=6), multiplier=MULTIPLIERS)
def test_multipliers_far_below_one_give_zero(acc: list[int], multiplier: int) -> None:
    # shift <= -32: |acc · M · 2^(shift-31)| < 2^62 · 2^-63 = 1/2.
    for shift in (-32, -1000, -(2**31)):
        assert requantize_reference(np.array(acc), multiplier, shift).tolist() == [0] * len(acc)
        fast = Rescale(np.asarray(multiplier), np.asarray(shift)).apply(np.array(acc))
        assert fast.tolist() == [0] * len(acc)


@PROPERTY
@given(
    acc=st.lists(ACCUMULATORS, min_size=1, max_size=12),
    multipliers=st.lists(MULTIPLIERS, min_size=3, max_size=3),
    shifts=st.lists(st.one_of(SHIFTS, st.sampled_from([-(2**31), -500])), min_size=3, max_size=3),
)
def test_fast_path_equals_the_definition_per_channel(
    acc: list[int], multipliers: list[int], shifts: list[int]
) -> None:
    values = np.array(acc * 3, dtype=np.int64).reshape(3, -1)  # channels along axis 0
    rescale = Rescale(np.array(multipliers), np.array(shifts), axis=0)
    np.testing.assert_array_equal(rescale.apply(values), rescale.apply_reference(values))


@pytest.mark.parametrize(
    ("acc", "expected"),
    [(1, 0), (3, 2), (5, 2), (7, 4), (-1, 0), (-3, -2), (-5, -2), (6, 3)],
)
def test_ties_go_to_the_even_neighbour(acc: int, expected: int) -> None:
    # M = 2^30, shift = 0: acc / 2, so odd accumulators are exact ties.
    rescale = Rescale(np.asarray(2**30), np.asarray(0))
    assert int(rescale.apply(np.array(acc))) == expected
    assert int(rescale.apply_reference(np.array(acc))) == expected


def test_requantization_adds_the_zero_point_then_clamps_to_the_type() -> None:
    stage = Requantization.from_real(0.5, zero_point=10, dtype="uint8")
    out = stage.apply(np.array([-100, -21, 0, 5, 2000]))
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 10, 12, 255]  # -21/2 = -10.5 -> -10 (even), 5/2 -> 2
    narrowed = Requantization.from_real(1.0, zero_point=0, dtype="int8", clamp=(-5, 300))
    assert narrowed.apply(np.array([-9, 9, 200])).tolist() == [-5, 9, 127]


def test_from_real_uses_the_fixed_point_multiplier() -> None:
    reals = np.array([0.1, 3.0, 2.0**-40])
    rescale = Rescale.from_real(reals, axis=1)
    expected = [quantize_multiplier(float(r)) for r in reals]
    assert list(zip(rescale.multiplier.tolist(), rescale.shift.tolist(), strict=True)) == expected


def test_accumulators_outside_int32_are_refused() -> None:
    rescale = Rescale(np.asarray(2**30), np.asarray(0))
    with pytest.raises(ModelError, match="int32"):
        rescale.apply(np.array([2**31]))
    with pytest.raises(ModelError, match="int32"):
        rescale.apply_reference(np.array([-(2**31) - 1]))
