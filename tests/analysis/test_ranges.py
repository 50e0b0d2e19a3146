"""log2 histograms, the int8 window, overflow and underflow against hand values and numpy counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eightbit.analysis import RangeCounter, dynamic_range, log2_bins
from eightbit.errors import DataError
from eightbit.quant import QuantParams, dequantize_values, quantize_values


def params(scale: float, zero_point: int = 0, dtype: str = "int8") -> QuantParams:
    return QuantParams(np.float32(scale), np.int64(zero_point), dtype)  # type: ignore[arg-type]


def test_log2_bins_hand_values() -> None:
    values = [1.0, 1.999, 2.0, 0.75, -0.5, 3.0, 2.0**-149, 1e30, 0.0]
    # floor(log2|x|): 1 -> 0, 1.999 -> 0, 2 -> 1, 0.75 -> -1, 0.5 -> -1, 3 -> 1,
    # the smallest float32 subnormal 2^-149 -> -149, 1e30 -> 99 (2^99 = 6.3e29); 0 has none.
    assert log2_bins(np.array(values, dtype=np.float32)).tolist() == [0, 0, 1, -1, -1, 1, -149, 99]


def test_histogram_matches_numpy_log2_counts() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(20_000) * np.exp(rng.uniform(-8, 4, 20_000))).astype(np.float32)
    x[:500] = 0.0
    result = dynamic_range(x, params(0.05))
    nonzero = x[x != 0].astype(np.float64)
    exponents = np.floor(np.log2(np.abs(nonzero))).astype(int)  # the numpy oracle
    expected = np.bincount(exponents - exponents.min())
    histogram = result.histogram
    assert histogram.first_bin == exponents.min()
    assert histogram.counts.tolist() == expected.tolist()
    assert histogram.zeros == 500
    assert histogram.total == x.size


def test_window_of_uint8_affine_format_hand_computed() -> None:
    # s = 0.5, z = 10: smallest 0.5, largest positive 0.5·(255 − 10) = 122.5,
    # largest negative 0.5·(10 − 0) = 5.
    window = dynamic_range(np.zeros(1, np.float32), params(0.5, 10, "uint8")).window
    assert (window.smallest, window.largest_positive, window.largest_negative) == (0.5, 122.5, 5.0)
    assert window.low_bit == -1.0
    assert window.high_bit == pytest.approx(math.log2(122.5))


def test_overflow_and_underflow_match_numpy_counts() -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(50_000) * 3.0).astype(np.float32)
    s, z = 0.02, 3  # int8: representable s·(q − z) for q in [−128, 127]
    result = dynamic_range(x, params(s, z))
    real = x.astype(np.float64)
    overflow = np.count_nonzero((real > s * (127 - z + 0.5)) | (real < -s * (z + 128 + 0.5)))
    underflow = np.count_nonzero((real != 0) & (np.abs(real) < s / 2))
    assert result.overflow == overflow > 0
    assert result.underflow == underflow > 0
    assert result.overflow_fraction == overflow / x.size
    assert result.underflow_fraction == underflow / x.size


def test_ties_at_half_an_lsb_round_to_zero_and_count_as_underflow() -> None:
    s = 0.25
    x = np.array([s / 2, -s / 2, 3 * s / 2, s / 4, 0.0], dtype=np.float32)
    result = dynamic_range(x, params(s))
    # ±s/2 round half to even to 0; 3s/2 rounds to 2; s/4 to 0; an exact 0 is no underflow.
    assert result.underflow == 3
    assert result.overflow == 0


def test_uint8_with_zero_point_at_qmin_clips_every_negative_value() -> None:
    x = np.array([-1.0, -0.01, 0.0, 0.5, 200.0], dtype=np.float32)
    result = dynamic_range(x, params(0.1, 0, "uint8"))
    # −1 clips to 0; −0.01 rounds to 0 (underflow, not clipping); 200 > 0.1·255.
    assert (result.overflow, result.underflow) == (2, 1)


def test_per_channel_counts_use_each_channel_scale() -> None:
    weights = np.array([[0.4, -0.05, 1.0], [4.0, 0.9, -0.3]], dtype=np.float32)
    per_channel = QuantParams(
        np.array([0.1, 1.0], np.float32), np.zeros(2, np.int64), "int8", axis=0
    )
    result = dynamic_range(weights, per_channel)
    # channel 0 (s = 0.1): |−0.05| ties to 0 -> underflow; channel 1 (s = 1): 0.3 -> 0.
    assert result.underflow == 2
    assert result.window.smallest == pytest.approx(0.1)
    assert result.window.largest_positive == pytest.approx(127.0)


def test_returned_values_are_quantize_dequantize_of_the_input() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 3, 5)) * 2).astype(np.float32)
    format_ = QuantParams(np.array([0.01, 0.02, 0.05], np.float32), np.array([5, 0, -3]), "int8", 1)
    counter = RangeCounter("t", format_)
    expected = dequantize_values(quantize_values(x, format_), format_)
    np.testing.assert_array_equal(counter.update(x), expected)


def test_streaming_equals_one_shot_and_float16_is_widened_exactly() -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(3000) * 4).astype(np.float16)
    counter = RangeCounter("t", params(0.03))
    for part in np.array_split(x, 7):
        counter.update(part)
    streamed, whole = counter.result(), dynamic_range(x.astype(np.float32), params(0.03))
    assert streamed.histogram.counts.tolist() == whole.histogram.counts.tolist()
    assert (streamed.overflow, streamed.underflow) == (whole.overflow, whole.underflow)


def test_non_finite_values_are_a_data_error_naming_the_tensor() -> None:
    with pytest.raises(DataError, match=r"'conv_out'.*NaN or infinite"):
        RangeCounter("conv_out", params(0.1)).update(np.array([1.0, np.nan], np.float32))


@settings(max_examples=40, deadline=None)
@given(
    scale_exponent=st.integers(-12, 4),
    zero_point=st.integers(-20, 20),
    seed=st.integers(0, 2**16),
)
def test_counts_partition_the_values(scale_exponent: int, zero_point: int, seed: int) -> None:
    """Every value is in one bin or a zero; overflow and underflow never overlap."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(500) * np.exp(rng.uniform(-6, 6))).astype(np.float32)
    x[rng.random(500) < 0.1] = 0.0
    s = 2.0**scale_exponent
    result = dynamic_range(x, params(s, zero_point))
    assert result.histogram.total == x.size
    assert result.histogram.zeros == np.count_nonzero(x == 0)
    real = x.astype(np.float64)
    # A power-of-two scale makes x / s exact in float32, so the real thresholds are exact.
    overflow = (real > s * (127 - zero_point + 0.5)) | (real < -s * (zero_point + 128 + 0.5))
    assert result.overflow == np.count_nonzero(overflow)
    assert result.underflow == np.count_nonzero((real != 0) & (np.abs(real) <= s / 2))
    assert result.overflow + result.underflow <= x.size
