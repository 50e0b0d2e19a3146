"""Dynamic ranges: log2 histograms against the window an int8 format holds (§A.4, §A.5).

``RangeCounter`` folds batches of a float tensor into exact counts: one histogram bin per
bit position (``floor(log2|x|)`` from ``np.frexp``), zeros apart, and how many values the
tensor's format clips (overflow) or rounds to zero (underflow). It also returns each
batch quantized and dequantized, so the caller measures the tensor's own noise (§A.3)
without quantizing twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from eightbit.errors import DataError
from eightbit.quant import QuantParams
from eightbit.quant.values import along_axis

# Bins k = floor(log2|x|) over float64's whole range: subnormals reach 2^-1074, the largest
# finite value is below 2^1024.
_LOWEST_BIN = -1074
_HIGHEST_BIN = 1023
_BIN_COUNT = _HIGHEST_BIN - _LOWEST_BIN + 1
# The quotient is clipped before the cast to int64, as quantize_values does.
_QUOTIENT_LIMIT = np.float32(2**40)


def log2_bins(values: npt.ArrayLike) -> np.ndarray:
    """``floor(log2|x|)`` of every nonzero finite ``x``, exactly (eq. A.8), as int64."""
    x = _as_float(np.asarray(values)).ravel()
    x = x[(x != 0) & np.isfinite(x)]
    _, exponent = np.frexp(x)
    return exponent.astype(np.int64) - 1


@dataclass(frozen=True, eq=False)
class Log2Histogram:
    """Counts of ``|x|`` in ``[2^k, 2^(k+1))`` for ``k = first_bin, first_bin + 1, ...``."""

    first_bin: int
    counts: np.ndarray
    zeros: int

    @property
    def bins(self) -> np.ndarray:
        """The bit position ``k`` of each count."""
        return np.arange(self.first_bin, self.first_bin + self.counts.size, dtype=np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.zeros

    def to_dict(self) -> dict[str, Any]:
        return {"first_bin": self.first_bin, "counts": self.counts.tolist(), "zeros": self.zeros}


@dataclass(frozen=True)
class Window:
    """The magnitudes a format represents (eq. A.9); per channel: the envelope."""

    smallest: float
    largest_positive: float
    largest_negative: float

    @property
    def low_bit(self) -> float:
        """log2 of the smallest nonzero magnitude (one LSB)."""
        return math.log2(self.smallest)

    @property
    def high_bit(self) -> float:
        """log2 of the largest magnitude, either sign."""
        return math.log2(max(self.largest_positive, self.largest_negative))

    def to_dict(self) -> dict[str, float]:
        return {
            "smallest": self.smallest,
            "largest_positive": self.largest_positive,
            "largest_negative": self.largest_negative,
        }


def format_window(params: QuantParams) -> Window:
    scale = params.scale.astype(np.float64)
    zero_point = params.zero_point.astype(np.float64)
    return Window(
        smallest=float(np.min(scale)),
        largest_positive=float(np.max(scale * (params.qmax - zero_point))),
        largest_negative=float(np.max(scale * (zero_point - params.qmin))),
    )


@dataclass(frozen=True, eq=False)
class DynamicRange:
    """What one tensor's values need against what its format holds (eqs. A.8-A.12)."""

    tensor: str
    histogram: Log2Histogram
    window: Window
    overflow: int
    underflow: int
    minimum: float
    maximum: float

    @property
    def total(self) -> int:
        return self.histogram.total

    @property
    def overflow_fraction(self) -> float:
        return self.overflow / self.total if self.total else 0.0

    @property
    def underflow_fraction(self) -> float:
        return self.underflow / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "total": self.total,
            "overflow": self.overflow,
            "underflow": self.underflow,
            "overflow_fraction": self.overflow_fraction,
            "underflow_fraction": self.underflow_fraction,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "window": self.window.to_dict(),
            "histogram": self.histogram.to_dict(),
        }


class RangeCounter:
    """Exact counts of one tensor's values against the format ``params``, batch by batch."""

    def __init__(self, tensor: str, params: QuantParams) -> None:
        self.tensor = tensor
        self.params = params
        self.counts = np.zeros(_BIN_COUNT, dtype=np.int64)
        self.zeros = 0
        self.overflow = 0
        self.underflow = 0
        self.minimum = math.inf
        self.maximum = -math.inf

    def update(self, values: npt.ArrayLike) -> np.ndarray:
        """Count ``values``; return them quantized and dequantized (eq. A.0), as float32."""
        x = np.asarray(values)
        if x.dtype.kind != "f":
            raise DataError(f"tensor {self.tensor!r} holds {x.dtype} values, not floats")
        x = _as_float(x)
        if not np.all(np.isfinite(x)):
            raise DataError(
                f"tensor {self.tensor!r} of the float model is NaN or infinite on this data; "
                "check the data's preprocessing (scale, mean, std)"
            )
        bins = log2_bins(x)
        self.counts += np.bincount(bins - _LOWEST_BIN, minlength=_BIN_COUNT)
        self.zeros += x.size - bins.size
        if x.size:
            self.minimum = min(self.minimum, float(x.min()))
            self.maximum = max(self.maximum, float(x.max()))
        params = self.params
        x32 = x.astype(np.float32, copy=False)
        steps, zero_point, scale = _steps(x32, params, self.tensor)
        code = steps + zero_point
        self.overflow += int(np.count_nonzero((code < params.qmin) | (code > params.qmax)))
        self.underflow += int(np.count_nonzero((steps == 0) & (x32 != 0)))
        return _stored_and_dequantized(code, params, zero_point, scale)

    def merge(self, batch: RangeCounter) -> None:
        """Fold in the counts of one later batch (integers and extremes: exact, §S.2)."""
        self.counts += batch.counts
        self.zeros += batch.zeros
        self.overflow += batch.overflow
        self.underflow += batch.underflow
        self.minimum = min(self.minimum, batch.minimum)
        self.maximum = max(self.maximum, batch.maximum)

    def result(self) -> DynamicRange:
        occupied = np.flatnonzero(self.counts)
        # Keep the bins from the lowest to the highest non-empty one (none: all zeros).
        first, last = (int(occupied[0]), int(occupied[-1])) if occupied.size else (0, -1)
        counts = self.counts[first : last + 1].copy()
        counts.flags.writeable = False
        return DynamicRange(
            tensor=self.tensor,
            histogram=Log2Histogram(first + _LOWEST_BIN, counts, self.zeros),
            window=format_window(self.params),
            overflow=self.overflow,
            underflow=self.underflow,
            minimum=self.minimum if math.isfinite(self.minimum) else 0.0,
            maximum=self.maximum if math.isfinite(self.maximum) else 0.0,
        )


def _steps(
    x32: np.ndarray, params: QuantParams, tensor: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid steps ``rint(x / scale)`` (eq. A.0) with the zero point and scale broadcast to x."""
    scale = along_axis(params.scale, params, x32.shape, tensor)
    zero_point = along_axis(params.zero_point, params, x32.shape, tensor)
    steps = np.rint(np.clip(x32 / scale, -_QUOTIENT_LIMIT, _QUOTIENT_LIMIT)).astype(np.int64)
    return steps, zero_point, scale


def fake_quantized(values: np.ndarray, params: QuantParams, tensor: str = "") -> np.ndarray:
    """``values`` quantized and dequantized (eq. A.0), as float32, without counting: what
    ``RangeCounter.update`` returns, for passes that need only the own SQNR."""
    x32 = _as_float(np.asarray(values)).astype(np.float32, copy=False)
    steps, zero_point, scale = _steps(x32, params, tensor)
    return _stored_and_dequantized(steps + zero_point, params, zero_point, scale)


def _stored_and_dequantized(
    code: np.ndarray, params: QuantParams, zero_point: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Codes saturated to the stored range and read back as float32 (eq. A.0)."""
    stored = np.clip(code, params.qmin, params.qmax)
    return ((stored - zero_point).astype(np.float32) * scale).astype(np.float32)


def dynamic_range(values: npt.ArrayLike, params: QuantParams, tensor: str = "") -> DynamicRange:
    """The dynamic range of one array of values against ``params``."""
    counter = RangeCounter(tensor, params)
    counter.update(values)
    return counter.result()


def _as_float(x: np.ndarray) -> np.ndarray:
    """float16/bfloat16-like narrow floats widened to float32 (exact); others unchanged."""
    return x.astype(np.float32) if x.dtype.kind == "f" and x.dtype.itemsize < 4 else x
