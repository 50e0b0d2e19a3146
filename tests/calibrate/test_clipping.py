"""Range selection against independent oracles: numpy, a naive KL, closed-form MSE optima."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eightbit.calibrate import MinMaxObserver, select_range
from eightbit.calibrate.clipping import (
    EMPTY_LEVEL_COUNT,
    entropy_range,
    folded_counts,
    kl_divergences,
    mse_range,
    percentile_range,
)
from eightbit.calibrate.histogram import Histogram
from eightbit.errors import ConfigError
from tests.calibrate.reference import naive_mse, naive_mse_grid

RNG = np.random.default_rng(20240601)
GAUSSIAN = RNG.standard_normal(4_000_000).astype(np.float32)


def histogram_of(values: np.ndarray, bins: int = 2048) -> Histogram:
    histogram = Histogram(bins)
    histogram.update(values)
    return histogram


# -- entropy ---------------------------------------------------------------------------


def naive_kl(counts: np.ndarray, levels: int) -> np.ndarray:
    """C.5 by its definition, one candidate at a time: the specification of kl_divergences."""
    result = []
    for kept in range(levels, counts.size + 1):
        p = counts[:kept].astype(float)
        p[-1] += counts[kept:].sum()
        width = kept // levels
        q = np.zeros(kept)
        for group in range(levels):
            start = group * width
            stop = kept if group == levels - 1 else start + width
            mass = counts[start:stop].sum()
            nonzero = np.count_nonzero(p[start:stop])
            if nonzero:
                q[start:stop] = np.where(p[start:stop] > 0, mass / nonzero, 0.0)
        if counts[:kept].sum() == 0:
            result.append(math.inf)
            continue
        q[(p > 0) & (q == 0)] = EMPTY_LEVEL_COUNT
        p, q = p / p.sum(), q / q.sum()
        inside = p > 0
        result.append(float(np.sum(p[inside] * np.log(p[inside] / q[inside]))))
    return np.array(result)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=2, max_size=70),
    st.integers(1, 9),
    st.floats(0.0, 0.9),
)
def test_kl_divergences_equal_the_definition(raw: list[int], levels: int, sparsity: float) -> None:
    counts = np.array(raw, dtype=float)
    counts[np.random.default_rng(len(raw)).random(counts.size) < sparsity] = 0
    if counts.sum() == 0 or counts.size < levels:
        return
    fast, slow = kl_divergences(counts, levels), naive_kl(counts, levels)
    assert np.array_equal(np.isinf(fast), np.isinf(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-9, atol=1e-12)


def test_entropy_clips_a_planted_outlier() -> None:
    values = np.append(GAUSSIAN[:100_000], np.float32(1000.0))
    histogram = histogram_of(values)
    low, high = entropy_range(histogram)
    assert high < 100  # the outlier at 1000 is clipped ...
    assert high > 3 and low < -3  # ... the bulk of the distribution is not
    # The threshold is symmetric; the range does not reach beyond the observed minimum.
    assert low == max(-high, histogram.min)


def test_entropy_clips_only_the_far_tail_of_a_gaussian() -> None:
    # 128 levels resolve N(0, 1) finely: the divergence only pays for clipping the few
    # extreme samples (as with NVIDIA's pytorch-quantization, which keeps ~4.7 here).
    histogram = histogram_of(GAUSSIAN[:1_000_000])
    low, high = entropy_range(histogram)
    assert high > 4.0 and low < -4.0
    assert histogram.fraction_outside(low, high) < 1e-4


def test_entropy_is_not_pulled_into_the_bulk_by_relu_zeros() -> None:
    relu = np.maximum(GAUSSIAN[:1_000_000], 0)
    histogram = histogram_of(relu)
    low, high = entropy_range(histogram)
    assert low == 0.0
    assert high > 0.8 * histogram.max


def test_entropy_threshold_is_a_bin_edge_or_the_extreme() -> None:
    values = np.append(GAUSSIAN[:50_000], np.float32(-400.0))
    histogram = histogram_of(values)
    low, high = entropy_range(histogram)
    _, exponent = folded_counts(histogram)
    threshold = max(-low, high)
    assert (threshold / math.ldexp(1.0, exponent)).is_integer()
    assert threshold < 400  # the outlier is clipped
    assert (low, high) == (max(-threshold, histogram.min), min(threshold, histogram.max))


def test_folding_sums_to_the_total_and_coarsens_far_from_zero() -> None:
    histogram = histogram_of(np.linspace(1000.0, 1001.0, 5000, dtype=np.float32))
    counts, exponent = folded_counts(histogram)
    assert counts.sum() == histogram.total
    assert counts.size <= histogram.capacity
    assert exponent > histogram.exponent


# -- percentile ------------------------------------------------------------------------


@pytest.mark.parametrize("percentile", [99.0, 99.9, 99.99, 100.0])
def test_percentile_matches_numpy_within_a_bin(percentile: float) -> None:
    values = RNG.laplace(size=300_000).astype(np.float32) * 3 + 1
    histogram = histogram_of(values)
    low, high = percentile_range(histogram, percentile)
    tolerance = 2 * histogram.bin_width
    assert high == pytest.approx(np.percentile(values, percentile), abs=tolerance)
    assert low == pytest.approx(np.percentile(values, 100 - percentile), abs=tolerance)
    assert histogram.min <= low <= high <= histogram.max


def test_percentile_keeps_the_floor_of_non_negative_data() -> None:
    relu = np.maximum(GAUSSIAN[:200_000], 0)
    low, high = percentile_range(histogram_of(relu), 99.0)
    assert low == 0.0
    assert high == pytest.approx(np.percentile(relu, 99.0), rel=1e-2)
    negative = -relu
    low, high = percentile_range(histogram_of(negative), 99.0)
    assert high == 0.0


# -- mse -------------------------------------------------------------------------------


def _gaussian_error(alpha: np.ndarray, bits: int) -> np.ndarray:
    tail = 0.5 * np.vectorize(math.erfc)(alpha / math.sqrt(2))
    density = np.exp(-(alpha**2) / 2) / math.sqrt(2 * math.pi)
    step = 2 * alpha / (2**bits - 1)
    return (1 - 2 * tail) * step**2 / 12 + 2 * ((1 + alpha**2) * tail - alpha * density)


def _laplace_error(alpha: np.ndarray, bits: int) -> np.ndarray:
    step = 2 * alpha / (2**bits - 1)
    return (1 - np.exp(-alpha)) * step**2 / 12 + 2 * np.exp(-alpha)


def _analytic_optimum(error: object, bits: int) -> float:
    alphas = np.arange(0.5, 25.0, 1e-4)
    errors = error(alphas, bits)  # type: ignore[operator]
    return float(alphas[np.argmin(errors)])


def _laplace_quantiles(count: int) -> np.ndarray:
    """Laplace(0, 1) data with no sampling noise: the inverse CDF at evenly spaced levels."""
    levels = (np.arange(count) + 0.5) / count
    return np.where(levels < 0.5, np.log(2 * levels), -np.log(2 * (1 - levels)))


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_finds_the_analytic_optimum_for_gaussian_data(bits: int) -> None:
    optimum = _analytic_optimum(_gaussian_error, bits)
    if bits == 8:
        assert optimum == pytest.approx(3.92, abs=0.05)  # the oracle itself (ACIQ)
    low, high = mse_range(histogram_of(GAUSSIAN), bits)
    assert high == pytest.approx(optimum, rel=0.02)
    assert -low == pytest.approx(optimum, rel=0.02)


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_finds_the_analytic_optimum_for_laplace_data(bits: int) -> None:
    optimum = _analytic_optimum(_laplace_error, bits)
    if bits == 8:
        assert optimum == pytest.approx(9.89, abs=0.05)
    low, high = mse_range(histogram_of(_laplace_quantiles(2_000_000)), bits)
    assert high == pytest.approx(optimum, rel=0.02)
    assert -low == pytest.approx(optimum, rel=0.02)


def _candidates(histogram: Histogram) -> tuple[np.ndarray, np.ndarray]:
    edges = histogram.edges[1:-1]
    lows = np.append(histogram.min, edges[(edges > histogram.min) & (edges < 0)])
    highs = np.append(edges[(edges > 0) & (edges < histogram.max)], histogram.max)
    return lows, highs


@pytest.mark.parametrize("seed", [0, 1])
def test_mse_thinned_search_finds_the_minimum_of_the_full_grid(seed: int) -> None:
    rng = np.random.default_rng(seed)
    skewed = np.concatenate([rng.standard_normal(30_000), rng.exponential(3, 30_000)])
    histogram = histogram_of(skewed.astype(np.float32), bins=2048)
    lows, highs = _candidates(histogram)
    assert lows.size * highs.size > 1 << 18  # the thinned search, not the exhaustive one
    low, high = mse_range(histogram, 8)
    found = naive_mse(histogram, low, high, 8)
    # No better point on a grid as fine as the thinned pass, offset from it ...
    assert found <= naive_mse_grid(histogram, lows[1::5], highs[1::5], 8).min() * (1 + 1e-12)
    # ... nor anywhere near the result at full resolution.
    row, column = int(np.searchsorted(lows, low)), int(np.searchsorted(highs, high))
    near_lows = lows[max(0, row - 12) : row + 13]
    near_highs = highs[max(0, column - 12) : column + 13]
    assert found <= naive_mse_grid(histogram, near_lows, near_highs, 8).min() * (1 + 1e-12)


def test_mse_on_a_small_grid_is_the_exhaustive_argmin() -> None:
    values = np.random.default_rng(5).standard_normal(3000).astype(np.float32)
    histogram = histogram_of(values, bins=2048)
    histogram_small = Histogram(8)
    histogram_small.update(values)
    lows, highs = _candidates(histogram_small)
    errors = {(lo, hi): naive_mse(histogram_small, lo, hi, 4) for lo in lows for hi in highs}
    assert mse_range(histogram_small, 4) == min(errors, key=errors.__getitem__)
    assert histogram.total == 3000


# -- dispatch --------------------------------------------------------------------------


def test_minmax_uses_exact_extremes_or_moving_averages() -> None:
    observer = MinMaxObserver()
    observer.update(np.array([-2.0, 5.0]))
    assert select_range(observer, "minmax") == (-2.0, 5.0)
    histogram = histogram_of(np.array([-3.0, 4.0], np.float32))
    assert select_range(histogram, "minmax") == (-3.0, 4.0)


def test_histogram_methods_need_a_histogram() -> None:
    with pytest.raises(ConfigError, match="needs a histogram"):
        select_range(MinMaxObserver(), "entropy")
    with pytest.raises(ConfigError, match=r"'method' must be one of \["):
        select_range(MinMaxObserver(), "kl")


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_constant_data_selects_its_value(method: str) -> None:
    histogram = histogram_of(np.full(100, 2.5, np.float32))
    assert select_range(histogram, method) == (2.5, 2.5)
