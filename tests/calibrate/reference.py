"""Oracles for range selection, written straight from docs/numerics.md §C (shared by tests)."""

from __future__ import annotations

import numpy as np

from eightbit.calibrate.histogram import Histogram


def naive_mse(histogram: Histogram, low: float, high: float, bits: int) -> float:
    """(C.9) bin by bin, straight from the definition."""
    width = histogram.bin_width
    centres = histogram.edges[:-1] + width / 2
    step = (high - low) / (2**bits - 1)
    error = np.where(
        centres > high,
        (centres - high) ** 2 + width**2 / 12,
        np.where(centres < low, (low - centres) ** 2 + width**2 / 12, step**2 / 12),
    )
    return float(np.dot(histogram.counts, error))


def naive_mse_grid(
    histogram: Histogram, lows: np.ndarray, highs: np.ndarray, bits: int
) -> np.ndarray:
    """naive_mse for every (low, high) pair, a row of lows at a time."""
    return np.array([[naive_mse(histogram, low, high, bits) for high in highs] for low in lows])
