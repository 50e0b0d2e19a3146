"""A streaming histogram with power-of-two bins that grows and merges exactly.

docs/numerics.md §C.2: bin ``k`` covers ``[k·2^e, (k+1)·2^e)``. Doubling the
width maps bin ``k`` to ``k >> 1``, so the range grows by re-binning counts, never by
revisiting values, and two histograms of the same tensor merge into exactly the histogram
one pass over all their values would have built.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from eightbit.errors import DataError

# Elements per step of the counting loop: the float and index buffers of one step
# (64 KiB elements: 256 KiB + 512 KiB) stay in the L2 cache between the passes over them.
_CHUNK = 1 << 16
# Bounds on the bin exponent (C.2.2): indices stay below 2^36 in magnitude, and 2^-e stays a
# normal float32 so the scale multiplies float32 data exactly.
_INDEX_BITS = 36
_MIN_EXPONENT = -126


class NonFiniteError(DataError):
    """Values to observe contain NaN or an infinity (the caller names the tensor)."""


def bin_exponent(low: float, high: float, capacity: int) -> int:
    """The bin exponent of (C.2.2): the finest ``e`` whose bins cover [low, high] in ``capacity``.

    A function of the range only, and monotone in it: this is what makes updates and merges
    in any order end in the same histogram.
    """
    magnitude = max(abs(low), abs(high))
    floor_exponent = _MIN_EXPONENT
    if magnitude > 0:
        floor_exponent = max(math.frexp(magnitude)[1] - _INDEX_BITS, _MIN_EXPONENT)

    def spanned(exponent: int) -> int:
        return _bin_index(high, exponent) - _bin_index(low, exponent) + 1

    width = high - low
    exponent = floor_exponent
    if width > 0:
        # Start near the answer, then step: spanned() is non-increasing in the exponent.
        exponent = max(math.frexp(width / (capacity - 2))[1], floor_exponent)
    while spanned(exponent) > capacity:
        exponent += 1
    while exponent > floor_exponent and spanned(exponent - 1) <= capacity:
        exponent -= 1
    return exponent


def _bin_index(value: float, exponent: int) -> int:
    """⌊value / 2^exponent⌋, exact: ldexp only changes the binary exponent of a float64."""
    return math.floor(math.ldexp(value, -exponent))


class Histogram:
    """Counts of a tensor's values in ``bins`` to ``2·bins`` power-of-two bins, with exact extremes.

    ``counts[j]`` is the number of values in ``[edges[j], edges[j+1])``. Build one with
    ``update`` (any number of times) or ``merge``; the result depends only on the multiset
    of values seen, not on how they were split into batches or histograms.
    """

    __slots__ = ("bins", "counts", "exponent", "max", "min", "offset")

    def __init__(self, bins: int = 2048) -> None:
        if not isinstance(bins, int) or bins < 2:
            raise ValueError(f"'bins' must be an integer >= 2 (got {bins!r})")
        self.bins = bins
        self.exponent = 0
        self.offset = 0
        self.counts: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self.min = math.inf
        self.max = -math.inf

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_state(
        cls,
        *,
        bins: int,
        exponent: int,
        offset: int,
        counts: npt.ArrayLike,
        minimum: float,
        maximum: float,
    ) -> Histogram:
        """Rebuild a histogram from stored fields; raise ``DataError`` if they are inconsistent."""
        histogram = cls(bins)
        array = np.asarray(counts)
        if array.ndim != 1 or array.dtype.kind not in "iu" or (array < 0).any():
            raise DataError("histogram counts must be a 1-D array of non-negative integers")
        histogram.counts = array.astype(np.int64)
        if array.size:
            histogram.exponent, histogram.offset = int(exponent), int(offset)
            histogram.min, histogram.max = float(minimum), float(maximum)
            expected = (
                bin_exponent(histogram.min, histogram.max, histogram.capacity),
                _bin_index(histogram.min, histogram.exponent),
                _bin_index(histogram.max, histogram.exponent) - histogram.offset + 1,
            )
            if expected != (histogram.exponent, histogram.offset, array.size):
                raise DataError(
                    f"histogram fields do not match its range [{minimum!r}, {maximum!r}] "
                    f"with {bins} bins; the file was edited or written by another version"
                )
        return histogram

    def copy(self) -> Histogram:
        twin = Histogram(self.bins)
        twin.exponent, twin.offset = self.exponent, self.offset
        twin.counts = self.counts.copy()
        twin.min, twin.max = self.min, self.max
        return twin

    # -- queries -----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Most bins ever stored: the data then spans at least ``bins`` of them (C.2.2)."""
        return 2 * self.bins

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def empty(self) -> bool:
        return self.counts.size == 0

    @property
    def bin_width(self) -> float:
        return math.ldexp(1.0, self.exponent)

    @property
    def edges(self) -> npt.NDArray[np.float64]:
        """Bin edges, exact in float64 (integers below 2^37 times a power of two)."""
        indices = np.arange(self.offset, self.offset + self.counts.size + 1, dtype=np.float64)
        return np.ldexp(indices, self.exponent)

    def fraction_outside(self, low: float, high: float) -> float:
        """Share of the values below ``low`` or above ``high``.

        A bin's values are read as spread evenly over the part of the bin inside [min, max].
        """
        if self.empty or self.total == 0:
            return 0.0
        # Each bin's values spread over the part of the bin inside [min, max].
        edges = np.clip(self.edges, self.min, self.max)
        left, right = edges[:-1], edges[1:]
        span = right - left
        with np.errstate(divide="ignore", invalid="ignore"):
            below = np.where(span > 0, (low - left) / span, (left < low).astype(float))
            above = np.where(span > 0, (right - high) / span, (right > high).astype(float))
        share = np.minimum(np.clip(below, 0.0, 1.0) + np.clip(above, 0.0, 1.0), 1.0)
        return float(np.dot(self.counts, share)) / self.total

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self.bins == other.bins
            and self.exponent == other.exponent
            and self.offset == other.offset
            and np.array_equal(self.counts, other.counts)
            and (self.min, self.max) == (other.min, other.max)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self.empty:
            return f"Histogram(bins={self.bins}, empty)"
        return (
            f"Histogram(bins={self.bins}, total={self.total}, range=[{self.min!r}, "
            f"{self.max!r}], width=2^{self.exponent}, stored={self.counts.size})"
        )

    # -- building ----------------------------------------------------------------------

    def update(self, values: npt.ArrayLike, *, extremes: tuple[float, float] | None = None) -> None:
        """Count ``values`` (any shape, float); raise ``NonFiniteError`` on NaN or inf.

        ``extremes`` are the exact (min, max) of a larger set that ``values`` were sampled
        from (observers.py): the range then covers them although only ``values`` count.
        """
        array = np.asarray(values)
        if array.dtype.kind != "f":
            array = array.astype(np.float64)
        if extremes is None:
            if array.size == 0:
                return
            extremes = (float(array.min()), float(array.max()))
        low, high = extremes
        if not (math.isfinite(low) and math.isfinite(high)):
            raise NonFiniteError("values contain NaN or infinity")
        self._cover(min(low, self.min), max(high, self.max))
        self._count(array.reshape(-1))

    def merge(self, other: Histogram) -> Histogram:
        """A new histogram of the values of both (C.2.3); neither operand changes."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms of {self.bins} and {other.bins} bins")
        merged = self.copy()
        if other.empty:
            return merged
        merged._cover(min(self.min, other.min), max(self.max, other.max))
        aligned = other.copy()
        aligned._cover(merged.min, merged.max)
        merged.counts += aligned.counts
        return merged

    def _cover(self, low: float, high: float) -> None:
        """Widen the range to [low, high]: coarser bins if needed, then more of them."""
        exponent = bin_exponent(low, high, self.capacity)
        if self.empty:
            self.exponent = exponent
            self.offset = _bin_index(low, exponent)
        elif exponent > self.exponent:
            self._coarsen(exponent)
        offset = _bin_index(low, self.exponent)
        length = _bin_index(high, self.exponent) - offset + 1
        if offset != self.offset or length != self.counts.size:
            grown = np.zeros(length, np.int64)
            start = self.offset - offset
            grown[start : start + self.counts.size] = self.counts
            self.counts, self.offset = grown, offset
        self.min, self.max = low, high

    def _coarsen(self, exponent: int) -> None:
        """Re-bin the counts to width 2^exponent: bin k goes to k >> shift (C.2.1), exactly."""
        shift = exponent - self.exponent
        targets = (np.arange(self.counts.size, dtype=np.int64) + self.offset) >> shift
        # targets is sorted, so each new bin sums one contiguous run of old bins.
        starts = np.flatnonzero(np.diff(targets, prepend=targets[0] - 1))
        self.counts = np.add.reduceat(self.counts, starts)
        self.offset = int(targets[0])
        self.exponent = exponent

    def _exact_in_float32(self, dtype: np.dtype) -> bool:
        """Whether ⌊x·2^-e⌋ - offset is exact in float32 for values of ``dtype`` (§C.2).

        The scale must be >= 1 (scaling up never underflows) and the offset a float32;
        float64 data needs float64 anyway.
        """
        offset_fits = float(np.float32(self.offset)) == self.offset
        return self.exponent <= 0 and dtype.itemsize <= 4 and offset_fits

    def _count(self, flat: np.ndarray) -> None:
        """Add ⌊x·2^-e⌋ - offset of every value into counts, one cache-sized chunk at a time."""
        work_type = np.float32 if self._exact_in_float32(flat.dtype) else np.float64
        scale = work_type(math.ldexp(1.0, -self.exponent))
        offset = work_type(self.offset)
        length = min(_CHUNK, flat.size)
        scaled = np.empty(length, work_type)
        indices = np.empty(length, np.intp)
        counts = self.counts
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start : start + _CHUNK]
            size = chunk.size
            np.multiply(chunk, scale, out=scaled[:size])
            np.floor(scaled[:size], out=scaled[:size])
            np.subtract(scaled[:size], offset, out=scaled[:size])
            np.copyto(indices[:size], scaled[:size], casting="unsafe")
            counts += np.bincount(indices[:size], minlength=counts.size)
