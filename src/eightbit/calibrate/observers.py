"""Observers: fixed-size summaries of a tensor's values, updated batch by batch.

An observer sees each batch once and keeps only its summary, so memory does not grow with
the number of samples. ``HistogramObserver`` (around histogram.py's ``Histogram``) serves
the histogram methods; ``MinMaxObserver`` serves ``minmax``, which needs only the extremes.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import numpy.typing as npt

from eightbit.calibrate.config import CalibrationConfig
from eightbit.calibrate.histogram import Histogram, NonFiniteError


class Observer(Protocol):
    """What range selection reads from any observer: the exact extremes seen."""

    min: float
    max: float

    def update(self, values: npt.ArrayLike, first: int = 0) -> None: ...


class MinMaxObserver:
    """Exact extremes (C.1.1), and optionally their moving averages over batches (C.1.2)."""

    __slots__ = ("average_max", "average_min", "max", "min", "moving_average")

    def __init__(self, moving_average: float | None = None) -> None:
        self.moving_average = moving_average
        self.min = math.inf
        self.max = -math.inf
        self.average_min = math.nan
        self.average_max = math.nan

    @property
    def empty(self) -> bool:
        return self.min > self.max

    def update(self, values: npt.ArrayLike, first: int = 0) -> None:
        """Fold one batch in; raise ``NonFiniteError`` on NaN or inf. (``first``: as for
        ``HistogramObserver``; extremes do not depend on it.)"""
        array = np.asarray(values)
        if array.size == 0:
            return
        low, high = float(array.min()), float(array.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise NonFiniteError("values contain NaN or infinity")
        rate = self.moving_average
        if rate is not None:
            empty = self.empty
            self.average_min = low if empty else (1 - rate) * self.average_min + rate * low
            self.average_max = high if empty else (1 - rate) * self.average_max + rate * high
        self.min = min(self.min, low)
        self.max = max(self.max, high)

    def selected(self) -> tuple[float, float]:
        """The ``minmax`` range: the moving averages when enabled, else the exact extremes."""
        if self.moving_average is None:
            return self.min, self.max
        return self.average_min, self.average_max

    def merge(self, other: MinMaxObserver) -> MinMaxObserver:
        """Observer of both value sets; moving averages depend on batch order and do not merge."""
        if self.moving_average is not None or other.moving_average is not None:
            raise ValueError("moving averages depend on batch order and cannot be merged")
        merged = MinMaxObserver()
        merged.min, merged.max = min(self.min, other.min), max(self.max, other.max)
        return merged


def sampling_stride(values_per_sample: int, budget: int | None) -> int:
    """Every how many values to count so that at most ``budget`` of one sample are counted.

    The stride is coprime with the sample size, hence with every dimension of the sample:
    the sampled positions then sweep all rows, columns and channels evenly instead of
    repeating one column pattern (a stride of 7 on rows of 56 would see 8 columns only).
    """
    if budget is None or values_per_sample <= budget:
        return 1
    stride = -(-values_per_sample // budget)
    while math.gcd(stride, values_per_sample) != 1:
        stride += 1
    return stride


class HistogramObserver:
    """Exact extremes of every value and a histogram of an evenly spread sample of them.

    Counting a value costs several min/max passes; a large activation (a 112x112x64 map
    has 800k values per sample) is counted on a systematic sample of at most
    ``values_per_sample`` values per sample, which estimates tails and shapes far more
    finely than range selection needs (§C.2). None counts every value.
    """

    __slots__ = ("histogram", "values_per_sample")

    def __init__(self, bins: int, values_per_sample: int | None) -> None:
        self.histogram = Histogram(bins)
        self.values_per_sample = values_per_sample

    @property
    def min(self) -> float:
        return self.histogram.min

    @property
    def max(self) -> float:
        return self.histogram.max

    def update(self, values: npt.ArrayLike, first: int = 0) -> None:
        """Fold one batch (first axis: samples) in; raise ``NonFiniteError`` on NaN or inf.

        ``first``: the index in its batch of the first sample of ``values``, when a batch is
        observed in slices (§C.9): the slices then count the positions the whole batch
        would have (C.9.2).
        """
        array = np.asarray(values)
        if array.size == 0:
            return
        extremes = (float(array.min()), float(array.max()))
        samples = array.shape[0] if array.ndim else 1
        per_sample = array.size // samples
        stride = sampling_stride(per_sample, self.values_per_sample)
        start = -first * per_sample % stride
        self.histogram.update(array.reshape(-1)[start::stride], extremes=extremes)


def make_observer(config: CalibrationConfig) -> HistogramObserver | MinMaxObserver:
    """The cheapest observer that serves ``config.method``."""
    if config.needs_histogram:
        return HistogramObserver(config.bins, config.histogram_values_per_sample)
    return MinMaxObserver(config.moving_average)
