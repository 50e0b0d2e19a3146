"""The engine's requantization against float32 semantics in exact rationals, and its fast
(numpy float32) form against the int64 definition."""

from __future__ import annotations

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
from tests.fixed.reference import requantize_float32

INT32 = st.integers(-(2**31), 2**31 - 1)
ACCUMULATORS = st.one_of(
    INT32,
    st.integers(-(2**25), 2**25),  # float32(acc) rounds above 2^24
    st.sampled_from([-(2**31), 2**31 - 1, 2**24 + 1, -(2**24) - 3, -1, 0, 1]),
)
MULTIPLIERS = st.one_of(st.integers(2**23, 2**24 - 1), st.sampled_from([0, 1, 2**23, 2**24 - 1]))
# Down to subnormal products and past them (every result 0), up to multipliers near 2^31.
SHIFTS = st.one_of(st.integers(-160, 31), st.sampled_from([-126, -32, 0, 23, 24, 25, 31]))


@PROPERTY
@given(acc=st.lists(ACCUMULATORS, min_size=1, max_size=6), multiplier=MULTIPLIERS, shift=SHIFTS)
def test_reference_is_onnxruntimes_float32_arithmetic(
    acc: list[int], multiplier: int, shift: int
) -> None:
    result = requantize_reference(np.array(acc), multiplier, shift)
    assert result.tolist() == [requantize_float32(a, multiplier, shift) for a in acc]


@PROPERTY
@given(acc=st.lists(ACCUMULATORS, min_size=1, max_size=6), multiplier=MULTIPLIERS)
def test_multipliers_far_below_one_give_zero(acc: list[int], multiplier: int) -> None:
    # shift <= -32: |round24(acc) · M · 2^(shift-24)| < 2^55 · 2^-56 = 1/2.
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


@PROPERTY
@given(
    acc=st.lists(ACCUMULATORS, min_size=1, max_size=12),
    scale=st.floats(min_value=0.0, max_value=2.0**31 - 2.0**7, width=32),
    zero=st.integers(-128, 255),
    dtype=st.sampled_from(["uint8", "int8"]),
)
def test_requantization_is_mlas_requantize_output(
    acc: list[int], scale: float, zero: int, dtype: str
) -> None:
    """clamp in float to [low − z, high − z], cvtps2dq, + z: ONNX Runtime's output stage."""
    info = np.iinfo(np.dtype(dtype))
    zero = int(np.clip(zero, info.min, info.max))
    stage = Requantization.from_real(np.float32(scale), zero, dtype)
    values = np.array(acc, dtype=np.int64)
    product = values.astype(np.float32) * np.float32(scale)
    clamped = np.clip(product, np.float32(info.min - zero), np.float32(info.max - zero))
    want = (np.rint(clamped).astype(np.int64) + zero).astype(dtype)
    np.testing.assert_array_equal(stage.apply(values), want)
    np.testing.assert_array_equal(stage.apply_reference(values), want)
    total = values.astype(np.float64) - 7.0
    np.testing.assert_array_equal(stage.apply_sum(total, np.array([7.0])), want)


@pytest.mark.parametrize(
    ("acc", "expected"),
    [(1, 0), (3, 2), (5, 2), (7, 4), (-1, 0), (-3, -2), (-5, -2), (6, 3)],
)
def test_ties_go_to_the_even_neighbour(acc: int, expected: int) -> None:
    # M = 2^23, shift = 0: S = 1/2, so odd accumulators are exact ties.
    rescale = Rescale(np.asarray(2**23), np.asarray(0))
    assert int(rescale.apply(np.array(acc))) == expected
    assert int(rescale.apply_reference(np.array(acc))) == expected


def test_requantization_adds_the_zero_point_then_clamps_to_the_type() -> None:
    stage = Requantization.from_real(0.5, zero_point=10, dtype="uint8")
    out = stage.apply(np.array([-100, -21, 0, 5, 2000]))
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 10, 12, 255]  # -21/2 = -10.5 -> -10 (even), 5/2 -> 2
    narrowed = Requantization.from_real(1.0, zero_point=0, dtype="int8", clamp=(-5, 300))
    assert narrowed.apply(np.array([-9, 9, 200])).tolist() == [-5, 9, 127]


def test_from_real_uses_the_float32_multiplier() -> None:
    reals = np.array([0.1, 3.0, 2.0**-40])
    rescale = Rescale.from_real(reals, axis=1)
    expected = [quantize_multiplier(float(r)) for r in reals]
    assert list(zip(rescale.multiplier.tolist(), rescale.shift.tolist(), strict=True)) == expected
    np.testing.assert_array_equal(rescale.scale, reals.astype(np.float32))


def test_accumulators_outside_int32_are_refused() -> None:
    rescale = Rescale(np.asarray(2**23), np.asarray(0))
    with pytest.raises(ModelError, match="int32"):
        rescale.apply(np.array([2**31]))
    with pytest.raises(ModelError, match="int32"):
        rescale.apply_reference(np.array([-(2**31) - 1]))
    stage = Requantization.from_real(0.5, zero_point=0, dtype="int8")
    with pytest.raises(ModelError, match="int32"):
        stage.apply_sum(np.array([2.0**31]))
