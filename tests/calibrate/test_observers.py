"""Observers: exact extremes, moving averages, and evenly spread histogram samples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eightbit.calibrate import CalibrationConfig, select_range
from eightbit.calibrate.clipping import entropy_range, folded_counts, kl_divergences
from eightbit.calibrate.histogram import Histogram, NonFiniteError
from eightbit.calibrate.observers import (
    HistogramObserver,
    MinMaxObserver,
    make_observer,
    sampling_stride,
)
from tests.calibrate.reference import naive_mse


def test_minmax_equals_numpy_over_all_batches() -> None:
    batches = [np.random.default_rng(i).standard_normal((4, 3, 5)) * (i + 1) for i in range(5)]
    observer = MinMaxObserver()
    for batch in batches:
        observer.update(batch)
    every = np.concatenate(batches)
    assert (observer.min, observer.max) == (every.min(), every.max())
    assert observer.selected() == (every.min(), every.max())


def test_moving_average_follows_its_recurrence() -> None:
    batches = [np.array([-1.0, 2.0]), np.array([-3.0, 4.0]), np.array([-2.0, 1.0])]
    observer = MinMaxObserver(moving_average=0.5)
    for batch in batches:
        observer.update(batch)
    low = 0.5 * (0.5 * -1.0 + 0.5 * -3.0) + 0.5 * -2.0
    high = 0.5 * (0.5 * 2.0 + 0.5 * 4.0) + 0.5 * 1.0
    assert observer.selected() == (low, high)
    assert (observer.min, observer.max) == (-3.0, 4.0)  # the exact extremes are kept too


def test_minmax_merges_exactly_but_not_moving_averages() -> None:
    a, b = MinMaxObserver(), MinMaxObserver()
    a.update(np.array([1.0, 5.0]))
    b.update(np.array([-2.0, 3.0]))
    merged = a.merge(b)
    assert (merged.min, merged.max) == (-2.0, 5.0)
    with pytest.raises(ValueError, match="moving averages"):
        MinMaxObserver(0.1).merge(a)


@pytest.mark.parametrize("observer", [MinMaxObserver(), HistogramObserver(2048, 16)])
def test_nonfinite_activations_are_reported(observer: MinMaxObserver | HistogramObserver) -> None:
    with pytest.raises(NonFiniteError):
        observer.update(np.array([[0.0, np.nan]], np.float32))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**7), st.integers(1, 10**5))
def test_the_stride_is_the_smallest_within_budget_sharing_no_factor_with_the_sample(
    size: int, budget: int
) -> None:
    # The definition, searched by brute force: the smallest stride that counts at most
    # `budget` values of the sample and is coprime with its size. No valid stride is under
    # size // budget, so the search starts there.
    expected = next(
        stride
        for stride in itertools.count(max(1, size // budget))
        if math.ceil(size / stride) <= budget and math.gcd(stride, size) == 1
    )
    assert sampling_stride(size, budget) == expected


def test_no_budget_counts_every_value() -> None:
    assert sampling_stride(10**9, None) == 1


def test_sampled_positions_cover_every_column_and_channel_evenly() -> None:
    # (channels, rows, columns) = (4, 56, 56): a stride of 7 would see 8 columns only.
    shape = (4, 56, 56)
    size = math.prod(shape)
    stride = sampling_stride(size, size // 7)
    positions = np.unravel_index(np.arange(0, size, stride), shape)
    per_column = np.bincount(positions[2], minlength=56)
    per_channel = np.bincount(positions[0], minlength=4)
    assert per_column.min() >= 0.8 * per_column.max()
    assert per_channel.min() >= 0.95 * per_channel.max()


def test_histogram_observer_keeps_exact_extremes_and_counts_a_sample() -> None:
    values = np.random.default_rng(0).standard_normal((8, 1000)).astype(np.float32)
    observer = HistogramObserver(2048, values_per_sample=100)
    observer.update(values)
    stride = 11  # ceil(1000 / 100) = 10 shares factors with 1000; 11 is the next coprime
    assert (observer.min, observer.max) == (values.min(), values.max())
    sampled = Histogram(2048)
    sampled.update(values.reshape(-1)[::stride], extremes=(values.min(), values.max()))
    assert observer.histogram == sampled
    assert observer.histogram.total == values.size // stride + (values.size % stride > 0)


def test_histogram_observer_without_budget_is_the_full_histogram() -> None:
    values = np.random.default_rng(1).standard_normal((3, 500)).astype(np.float32)
    observer = HistogramObserver(2048, values_per_sample=None)
    observer.update(values)
    full = Histogram(2048)
    full.update(values)
    assert observer.histogram == full


def test_make_observer_picks_the_cheapest_for_the_method() -> None:
    assert isinstance(make_observer(CalibrationConfig(method="minmax")), MinMaxObserver)
    for method in ("percentile", "entropy", "mse"):
        observer = make_observer(CalibrationConfig(method=method, bins=4096))
        assert isinstance(observer, HistogramObserver)
        assert observer.histogram.bins == 4096


def _large_laplace_batch() -> np.ndarray:
    # 16 samples of a 64x56x56 map (200k values each): sampled with a stride of 7.
    return np.random.default_rng(7).laplace(size=(16, 64 * 56 * 56)).astype(np.float32)


def _observed_both_ways(batch: np.ndarray) -> tuple[HistogramObserver, HistogramObserver]:
    sampled, full = HistogramObserver(2048, 1 << 15), HistogramObserver(2048, None)
    sampled.update(batch)
    full.update(batch)
    assert sampled.histogram.total < full.histogram.total / 6
    return sampled, full


def test_a_sampled_percentile_is_close_to_the_full_one() -> None:
    sampled, full = _observed_both_ways(_large_laplace_batch())
    low, high = select_range(sampled.histogram, "percentile", percentile=99.99)
    exact_low, exact_high = select_range(full.histogram, "percentile", percentile=99.99)
    assert high == pytest.approx(exact_high, rel=0.03)
    assert low == pytest.approx(exact_low, rel=0.03)


def test_a_sampled_mse_range_is_near_optimal_on_all_values() -> None:
    sampled, full = _observed_both_ways(_large_laplace_batch())
    # The error is flat near its minimum: judge the choice by its error on all values.
    chosen = naive_mse(full.histogram, *select_range(sampled.histogram, "mse"), 8)
    best = naive_mse(full.histogram, *select_range(full.histogram, "mse"), 8)
    assert chosen <= 1.05 * best


def test_a_sampled_entropy_threshold_is_near_optimal_on_all_values() -> None:
    sampled, full = _observed_both_ways(_large_laplace_batch())
    # The divergence is flat near its minimum, so the thresholds may differ by a few
    # percent; what matters is that the sampled one is nearly as good on all the values.
    counts, exponent = folded_counts(full.histogram)
    counts[0] = counts[1]
    divergence = kl_divergences(counts, 128)
    threshold = entropy_range(sampled.histogram)[1]
    chosen = int(threshold / math.ldexp(1.0, exponent)) - 128
    assert divergence[chosen] <= 1.25 * divergence.min()
