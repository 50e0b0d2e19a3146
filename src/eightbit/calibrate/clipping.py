"""Range selection: from an observer's summary to a clipping range [lo, hi].

Pure functions of a ``Histogram`` (or a ``MinMaxObserver`` for ``minmax``), each
implementing one section of docs/numerics.md. All candidate thresholds of a
method are scored in one array expression (or a few blocks of one), never one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from eightbit.calibrate.config import HISTOGRAM_METHODS, check_choice, check_percentile
from eightbit.calibrate.histogram import Histogram, bin_exponent
from eightbit.calibrate.observers import MinMaxObserver
from eightbit.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
# Scores a grid of candidates: (row indices, column indices) -> 2-D array of errors.
GridScore = Callable[[IndexArray, IndexArray], FloatArray]

# Largest (lo, hi) grid the MSE search scores exhaustively; larger ones are thinned (§C.6).
_MSE_EXHAUSTIVE_CELLS = 1 << 18
_MSE_COARSE_SIDE = 512
# Count given to the top level of Q when the threshold keeps no value in it, so that
# clipping a lone outlier has a finite divergence; MXNet's smoothing constant (§C.5).
EMPTY_LEVEL_COUNT = 1e-4


def select_range(
    observer: Histogram | MinMaxObserver,
    method: str,
    *,
    percentile: float = 99.99,
    bits: int = 8,
) -> tuple[float, float]:
    """The clipping range ``method`` selects from ``observer`` (§C.3-§C.6)."""
    check_choice("method", method, ("minmax", *sorted(HISTOGRAM_METHODS)))
    if method == "minmax":
        return minmax_range(observer)
    if not isinstance(observer, Histogram):
        raise ConfigError(
            f"method {method!r} needs a histogram, but only min/max were observed; "
            "calibrate again with this method"
        )
    if method == "percentile":
        return percentile_range(observer, percentile)
    if method == "entropy":
        return entropy_range(observer, bits)
    return mse_range(observer, bits)


def minmax_range(observer: Histogram | MinMaxObserver) -> tuple[float, float]:
    """(C.3.1): the observed extremes (their moving averages when the observer keeps them)."""
    if isinstance(observer, MinMaxObserver):
        return observer.selected()
    return observer.min, observer.max


def percentile_range(histogram: Histogram, percentile: float = 99.99) -> tuple[float, float]:
    """(C.4.1): the values of rank N·p/100 and N·(1 - p/100), clipping only sides away from 0."""
    check_percentile(percentile)
    if histogram.min == histogram.max:
        return histogram.min, histogram.max
    counts = histogram.counts
    cumulative = np.cumsum(counts)
    total = cumulative[-1]
    ranks = np.array([total * (1.0 - percentile / 100.0), total * percentile / 100.0])
    bins = np.searchsorted(cumulative, ranks, side="left")
    below = cumulative[bins] - counts[bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = np.where(counts[bins] > 0, (ranks - below) / counts[bins], 0.0)
    values = histogram.edges[bins] + histogram.bin_width * inside
    low, high = np.clip(values, histogram.min, histogram.max)
    if histogram.min >= 0:
        low = histogram.min
    if histogram.max <= 0:
        high = histogram.max
    return float(low), float(high)


def folded_counts(histogram: Histogram) -> tuple[FloatArray, int]:
    """Counts of |x| (§C.5) and their bin exponent: bin k < 0 folds onto bin -k-1.

    When the data lies far from zero the |x| axis would need more bins than the histogram
    holds; it is then re-binned coarser (exactly, C.2.1) to at most ``capacity`` bins.
    """
    magnitude = max(-histogram.min, histogram.max)
    exponent = max(histogram.exponent, bin_exponent(0.0, magnitude, histogram.capacity))
    signed = np.arange(histogram.offset, histogram.offset + histogram.counts.size, dtype=np.int64)
    folded = np.where(signed < 0, -signed - 1, signed) >> (exponent - histogram.exponent)
    counts = np.bincount(folded, weights=histogram.counts.astype(np.float64))
    return counts.astype(np.float64), exponent


def entropy_range(histogram: Histogram, bits: int = 8) -> tuple[float, float]:
    """§C.5: TensorRT's threshold of least KL divergence, as [max(-t, min), min(t, max)]."""
    if histogram.min == histogram.max:
        return histogram.min, histogram.max
    counts, exponent = folded_counts(histogram)
    one_sided = histogram.min >= 0 or histogram.max <= 0
    levels = 2**bits if one_sided else 2 ** (bits - 1)
    magnitude = max(-histogram.min, histogram.max)
    threshold = magnitude
    if counts.size > levels:
        # The bin at zero takes its neighbour's count (as NVIDIA's pytorch-quantization
        # does): a ReLU's spike of exact zeros would otherwise dominate every divergence
        # and pull the threshold far into the bulk of the distribution.
        counts[0] = counts[1]
        divergence = kl_divergences(counts, levels)
        # On ties keep the widest range: clip no more than the divergence asks for.
        best = divergence.size - 1 - int(np.argmin(divergence[::-1]))
        bins_kept = levels + best
        if bins_kept < counts.size:
            threshold = math.ldexp(bins_kept, exponent)
    return max(-threshold, histogram.min), min(threshold, histogram.max)


def _xlogx(values: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, values * np.log(values), 0.0)


def kl_divergences(counts: FloatArray, levels: int) -> FloatArray:
    """KL(P_i || Q_i) of §C.5 for every candidate i = levels … n, by (C.5.1), in O(n).

    All candidates with the same group width m = i // levels share their first levels - 1
    groups; only the last group, which ends at i, differs. So the shared part is summed
    once per width (about n / levels widths) and the rest is one value per candidate.
    Infinite for a candidate that keeps no value below its threshold.
    """
    total = float(counts.sum())
    mass = np.concatenate(([0.0], np.cumsum(counts)))  # mass[k] = Σ_{j<k} h_j
    nonzero = np.concatenate(([0], np.cumsum(counts > 0)))  # nonzero[k] = #{j<k: h_j > 0}
    entropy = np.concatenate(([0.0], np.cumsum(_xlogx(counts))))  # H_k of (C.5.1)
    kept = np.arange(levels, counts.size + 1)  # candidate i keeps bins [0, i)
    width = kept // levels
    clipped = total - mass[kept]  # O_i

    # Σ_g G_g log(G_g / z_g) over the groups g < levels - 1, once per distinct width.
    widths, width_index = np.unique(width, return_inverse=True)
    starts = widths[:, None] * np.arange(levels - 1)
    ends = starts + widths[:, None]
    group_mass = mass[ends] - mass[starts]
    group_nonzero = nonzero[ends] - nonzero[starts]
    with np.errstate(divide="ignore", invalid="ignore"):
        shared = np.where(group_mass > 0, group_mass * np.log(group_mass / group_nonzero), 0.0)
    shared_sum = shared.sum(axis=1)[width_index]

    # The last group [(levels - 1)·m, i) also receives the clipped mass O_i on bin i - 1,
    # which makes P_{i-1} non-zero even where h_{i-1} = 0. If that group holds no kept
    # values at all, Q_{i-1} would be 0 under P_{i-1} > 0 (KL = +inf, so a lone far outlier
    # could never be clipped); it gets EMPTY_LEVEL_COUNT instead (§C.5).
    last_start = (levels - 1) * width
    last_bin = counts[kept - 1]
    last_mass = mass[kept] - mass[last_start]
    last_nonzero = nonzero[kept] - nonzero[last_start] + ((last_bin == 0) & (clipped > 0))
    last_p_mass = last_mass + clipped
    empty_last = (last_mass == 0) & (clipped > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        last_q = np.where(empty_last, EMPTY_LEVEL_COUNT, last_mass / last_nonzero)
        last_term = np.where(last_p_mass > 0, last_p_mass * np.log(last_q), 0.0)
        s_p = entropy[kept - 1] + _xlogx(last_bin + clipped)
        s_pq = shared_sum + last_term
        q_total = total - clipped + np.where(empty_last, EMPTY_LEVEL_COUNT, 0.0)
        divergence = (s_p - s_pq) / total - math.log(total) + np.log(q_total)
    # A candidate that keeps no value at all is meaningless (and would score 0).
    divergence = np.where(total - clipped > 0, divergence, np.inf)
    result: FloatArray = np.where(np.isnan(divergence), np.inf, divergence)
    return result


def mse_range(histogram: Histogram, bits: int = 8) -> tuple[float, float]:
    """§C.6: the range of least expected squared error on a grid of 2^bits levels (C.6.1)."""
    low, high = histogram.min, histogram.max
    if low == high:
        return low, high
    width = histogram.bin_width
    edges = histogram.edges
    counts = histogram.counts.astype(np.float64)
    centres = edges[:-1] + width / 2
    # Prefix sums over bins [0, k): count, first and second moment (C.6.2).
    zeroth = np.concatenate(([0.0], np.cumsum(counts)))
    first = np.concatenate(([0.0], np.cumsum(counts * centres)))
    second = np.concatenate(([0.0], np.cumsum(counts * (centres**2 + width**2 / 12))))

    # Candidate ends: bin edges strictly inside the data on their side of zero, plus the
    # extremes themselves (index 0 / n: nothing clipped on that side).
    size = counts.size
    inner = np.arange(1, size)
    lo_index = np.concatenate(([0], inner[(edges[inner] > low) & (edges[inner] < min(high, 0))]))
    hi_index = np.concatenate((inner[(edges[inner] > max(low, 0)) & (edges[inner] < high)], [size]))
    if low >= 0:
        lo_index = np.array([0])
    if high <= 0:
        hi_index = np.array([size])
    lo_value = np.where(lo_index == 0, low, edges[lo_index])
    hi_value = np.where(hi_index == size, high, edges[hi_index])

    def errors(lo_pick: IndexArray, hi_pick: IndexArray) -> FloatArray:
        """Unnormalized (C.6.1) on the grid lo_pick x hi_pick (indices into the candidates)."""
        lo_at, hi_at = lo_index[lo_pick][:, None], hi_index[hi_pick][None, :]
        lo, hi = lo_value[lo_pick][:, None], hi_value[hi_pick][None, :]
        below = lo**2 * zeroth[lo_at] - 2 * lo * first[lo_at] + second[lo_at]
        above_count = zeroth[-1] - zeroth[hi_at]
        above = (
            hi**2 * above_count - 2 * hi * (first[-1] - first[hi_at]) + (second[-1] - second[hi_at])
        )
        inside = zeroth[-1] - above_count - zeroth[lo_at]
        step = (hi - lo) / (2**bits - 1)
        result: FloatArray = inside * step**2 / 12 + below + above
        return result

    best_lo, best_hi = _search_2d(errors, lo_index.size, hi_index.size)
    return float(lo_value[best_lo]), float(hi_value[best_hi])


def _search_2d(score: GridScore, rows: int, columns: int) -> tuple[int, int]:
    """Argmin of ``score`` over the full ``rows x columns`` grid (§C.6).

    Exhaustive for small grids; otherwise on a thinned grid, then exhaustively within one
    stride of the best thinned point.
    """
    if rows * columns <= _MSE_EXHAUSTIVE_CELLS:
        return _grid_argmin(score, np.arange(rows), np.arange(columns))
    row_stride = -(-rows // _MSE_COARSE_SIDE)
    column_stride = -(-columns // _MSE_COARSE_SIDE)
    coarse_rows = np.unique(np.append(np.arange(0, rows, row_stride), rows - 1))
    coarse_columns = np.unique(np.append(np.arange(0, columns, column_stride), columns - 1))
    row, column = _grid_argmin(score, coarse_rows, coarse_columns)
    near_rows = np.arange(max(0, row - row_stride), min(rows, row + row_stride + 1))
    near_columns = np.arange(
        max(0, column - column_stride), min(columns, column + column_stride + 1)
    )
    return _grid_argmin(score, near_rows, near_columns)


def _grid_argmin(score: GridScore, rows: IndexArray, columns: IndexArray) -> tuple[int, int]:
    """(row, column) of the smallest score on the grid rows x columns (first on ties)."""
    grid = score(rows, columns)
    row_at, column_at = np.unravel_index(int(np.argmin(grid)), grid.shape)
    return int(rows[row_at]), int(columns[column_at])
