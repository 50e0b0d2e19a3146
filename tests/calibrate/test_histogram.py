"""Histogram: exact counts (np.histogram oracle), exact growth, exact merges (C.2)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eightbit.calibrate.histogram import Histogram, NonFiniteError, bin_exponent
from eightbit.errors import DataError

finite32 = st.floats(
    min_value=-(2.0**100), max_value=2.0**100, allow_nan=False, allow_infinity=False, width=32
)
batches = hnp.arrays(np.float32, st.integers(1, 60), elements=finite32)
small_bins = st.sampled_from([2, 3, 8, 64, 2048])


def histogram_of(*arrays: np.ndarray, bins: int = 2048) -> Histogram:
    histogram = Histogram(bins)
    for array in arrays:
        histogram.update(array)
    return histogram


@settings(max_examples=150, deadline=None)
@given(st.lists(batches, min_size=1, max_size=4), small_bins)
def test_counts_equal_numpy_histogram_with_the_same_edges(
    parts: list[np.ndarray], bins: int
) -> None:
    histogram = histogram_of(*parts, bins=bins)
    values = np.concatenate(parts)
    expected, _ = np.histogram(values.astype(np.float64), bins=histogram.edges)
    assert np.array_equal(histogram.counts, expected)
    assert histogram.total == values.size
    assert (histogram.min, histogram.max) == (float(values.min()), float(values.max()))
    # Every stored bin lies within the observed range, so nothing is wasted at the ends.
    assert histogram.counts[0] > 0 and histogram.counts[-1] > 0


@settings(max_examples=150, deadline=None)
@given(st.lists(batches, min_size=1, max_size=5), small_bins)
def test_any_split_into_updates_gives_the_one_pass_histogram(
    parts: list[np.ndarray], bins: int
) -> None:
    assert histogram_of(*parts, bins=bins) == histogram_of(np.concatenate(parts), bins=bins)


@settings(max_examples=150, deadline=None)
@given(batches, batches, batches, small_bins)
def test_merge_is_associative_commutative_and_equals_one_pass(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, bins: int
) -> None:
    ha, hb, hc = (histogram_of(x, bins=bins) for x in (a, b, c))
    one_pass = histogram_of(np.concatenate([a, b, c]), bins=bins)
    assert ha.merge(hb).merge(hc) == one_pass
    assert ha.merge(hb.merge(hc)) == one_pass
    assert hc.merge(ha).merge(hb) == one_pass


def test_merge_leaves_its_operands_unchanged() -> None:
    a = histogram_of(np.array([0.0, 1.0], np.float32))
    b = histogram_of(np.array([-100.0, 5e3], np.float32))
    a_before, b_before = a.copy(), b.copy()
    a.merge(b)
    assert a == a_before and b == b_before


@settings(max_examples=200, deadline=None)
@given(finite32, finite32, st.sampled_from([4, 64, 4096]))
def test_bin_exponent_is_the_finest_that_fits(x: float, y: float, capacity: int) -> None:
    low, high = min(x, y), max(x, y)
    exponent = bin_exponent(low, high, capacity)

    def spanned(e: int) -> int:
        return math.floor(math.ldexp(high, -e)) - math.floor(math.ldexp(low, -e)) + 1

    assert spanned(exponent) <= capacity
    magnitude = max(abs(low), abs(high))
    floor = -126 if magnitude == 0 else max(math.frexp(magnitude)[1] - 36, -126)
    assert exponent >= floor
    if exponent > floor:
        assert spanned(exponent - 1) > capacity
        # ... which means more than capacity / 2 bins cover the data (C.4).
        assert spanned(exponent) > capacity // 2


def test_the_range_spans_between_bins_and_twice_bins() -> None:
    values = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 7 + 3
    histogram = histogram_of(values)
    spanned = (histogram.max - histogram.min) / histogram.bin_width
    assert 2048 <= spanned <= 4096


def test_growth_rebins_exactly_when_the_range_widens_a_lot() -> None:
    rng = np.random.default_rng(1)
    narrow = rng.uniform(-1e-3, 1e-3, 5000).astype(np.float32)
    wide = rng.uniform(-1e4, 1e4, 50).astype(np.float32)
    grown = histogram_of(narrow, wide)
    assert grown.exponent > histogram_of(narrow).exponent + 20
    assert grown == histogram_of(np.concatenate([narrow, wide]))
    expected, _ = np.histogram(np.concatenate([narrow, wide]), bins=grown.edges)
    assert np.array_equal(grown.counts, expected)


def test_constant_and_zero_data_keep_a_single_bin() -> None:
    zeros = histogram_of(np.zeros(10, np.float32))
    assert zeros.counts.tolist() == [10] and (zeros.min, zeros.max) == (0.0, 0.0)
    constant = histogram_of(np.full(7, 3.5, np.float32))
    assert constant.counts.tolist() == [7]
    assert constant.edges[0] <= 3.5 < constant.edges[1]


def test_negative_values_floor_toward_minus_infinity() -> None:
    # -w/2 belongs to bin -1 = [-w, 0): truncation toward zero would put it in bin 0.
    histogram = histogram_of(np.array([-0.25, 0.0, 0.25, 1.0], np.float32), bins=2)
    expected, _ = np.histogram([-0.25, 0.0, 0.25, 1.0], bins=histogram.edges)
    assert np.array_equal(histogram.counts, expected)
    assert histogram.edges[0] < -0.25 < 0.0 <= histogram.edges[-2]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_float_type_counts_exactly(dtype: type) -> None:
    values: np.ndarray = (np.random.default_rng(2).standard_normal(3000) * 50).astype(dtype)
    histogram = histogram_of(values)
    expected, _ = np.histogram(values.astype(np.float64), bins=histogram.edges)
    assert np.array_equal(histogram.counts, expected)


def test_values_larger_than_one_chunk_count_exactly() -> None:
    values = np.random.default_rng(3).laplace(size=200_000).astype(np.float32) * 1e4
    histogram = histogram_of(values)
    assert histogram.exponent > 0  # exercises the float64 path of large bin widths
    expected, _ = np.histogram(values, bins=histogram.edges)
    assert np.array_equal(histogram.counts, expected)


def test_extremes_widen_the_range_without_counting() -> None:
    histogram = Histogram(2048)
    histogram.update(np.array([1.0, 2.0], np.float32), extremes=(-10.0, 30.0))
    assert (histogram.min, histogram.max, histogram.total) == (-10.0, 30.0, 2)
    assert histogram.edges[0] <= -10.0 and histogram.edges[-1] > 30.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_values_are_refused(bad: float) -> None:
    histogram = histogram_of(np.array([1.0], np.float32))
    before = histogram.copy()
    with pytest.raises(NonFiniteError):
        histogram.update(np.array([0.0, bad], np.float32))
    assert histogram == before


def test_empty_updates_change_nothing() -> None:
    histogram = Histogram(2048)
    histogram.update(np.zeros(0, np.float32))
    assert histogram.empty and histogram.total == 0


def test_state_round_trips_and_inconsistent_state_is_refused() -> None:
    original = histogram_of(np.random.default_rng(4).standard_normal(500).astype(np.float32))
    fields: dict[str, Any] = dict(
        bins=original.bins,
        exponent=original.exponent,
        offset=original.offset,
        counts=original.counts,
        minimum=original.min,
        maximum=original.max,
    )
    assert Histogram.from_state(**fields) == original
    with pytest.raises(DataError, match="do not match"):
        Histogram.from_state(**{**fields, "exponent": original.exponent + 1})
    with pytest.raises(DataError, match="non-negative integers"):
        Histogram.from_state(**{**fields, "counts": -original.counts})


def test_fraction_outside_reads_bins_within_the_observed_range() -> None:
    values = np.linspace(0.0, 100.0, 100_001, dtype=np.float64)
    histogram = histogram_of(values)
    assert histogram.fraction_outside(0.0, 100.0) == 0.0
    assert histogram.fraction_outside(10.0, 90.0) == pytest.approx(0.2, abs=1e-3)
    assert histogram.fraction_outside(-5.0, 50.0) == pytest.approx(0.5, abs=1e-3)


def test_merging_different_bin_counts_is_refused() -> None:
    with pytest.raises(ValueError, match="2048 and 4096"):
        Histogram(2048).merge(Histogram(4096))
