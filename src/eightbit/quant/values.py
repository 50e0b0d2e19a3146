"""Quantize and dequantize arrays with ``QuantParams`` (docs/numerics.md §Q, eqs. Q.1, Q.2)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from eightbit.errors import DataError
from eightbit.quant.params import QuantParams


def quantize_values(values: npt.ArrayLike, params: QuantParams) -> np.ndarray:
    """``clamp(round_half_even(x / scale) + zero_point, qmin, qmax)``, as ONNX QuantizeLinear.

    8-bit results divide in float32, as ONNX Runtime's QuantizeLinear does, so a value
    quantized here and in a QDQ model gives the same integer. int32 (bias) results divide
    in float64: float32 has 24 significant bits and could not reach every integer up to
    2^30. Per-channel parameters broadcast along ``params.axis``.
    """
    wide = params.dtype == "int32"
    x = np.asarray(values, dtype=np.float64 if wide else np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError("cannot quantize NaN or infinite values; check the float model's output")
    scale = along_axis(params.scale.astype(x.dtype), params, x.shape)
    zero_point = along_axis(params.zero_point, params, x.shape)
    if not wide:
        return by_rows(_narrow_rows(params), x, params.numpy_dtype, scale, zero_point)
    # The quotient is clipped before the cast so that huge values saturate, not wrap.
    limit = np.float64(2**40)

    def rows(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
        rounded = np.rint(np.clip(x / scale, -limit, limit)).astype(np.int64)
        return np.clip(rounded + zero_point, params.qmin, params.qmax).astype(params.numpy_dtype)

    return by_rows(rows, x, params.numpy_dtype, scale, zero_point)


def _narrow_rows(params: QuantParams) -> Callable[..., np.ndarray]:
    """Q.1 for 8- and 16-bit results in float32 and int32 temporaries: the quotient is
    clamped to ``[qmin − zero_point, qmax − zero_point]`` before rounding, which equals
    clamping after it (both bounds are integers, and rounding is monotone and leaves
    integers alone)."""

    def rows(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
        low = (params.qmin - zero_point).astype(np.float32)
        high = (params.qmax - zero_point).astype(np.float32)
        rounded = np.rint(np.clip(x / scale, low, high)).astype(np.int32)
        rounded += zero_point.astype(np.int32)
        return rounded.astype(params.numpy_dtype)

    return rows


def dequantize_values(q: npt.ArrayLike, params: QuantParams) -> np.ndarray:
    """``scale · (q − zero_point)`` in float32, as ONNX DequantizeLinear."""
    stored = np.asarray(q)
    scale = along_axis(params.scale, params, stored.shape)
    zero_point = along_axis(params.zero_point, params, stored.shape)

    def rows(stored: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
        wide = stored.astype(np.int64)
        return ((wide - zero_point).astype(np.float32) * scale).astype(np.float32)

    return by_rows(rows, stored, np.float32, scale, zero_point)


# Elements per slice in ``by_rows``: its int64 and float64 temporaries stay near 128 MB
# whatever the size of the weight (VGG-16's first Gemm holds 103 M).
ROW_CHUNK_ELEMENTS = 1 << 24


def by_rows(
    function: Callable[..., np.ndarray],
    x: np.ndarray,
    dtype: npt.DTypeLike,
    *along: np.ndarray,
) -> np.ndarray:
    """``function(x, *along)`` computed on slices of ``x``'s first axis, into one array.

    ``function`` must work element by element (``along`` broadcast against ``x``), so the
    result equals one call on the whole array; only the temporaries shrink.
    """
    if x.ndim == 0 or x.size <= ROW_CHUNK_ELEMENTS:
        return function(x, *along)
    per_row = max(1, x.size // x.shape[0])
    step = max(1, ROW_CHUNK_ELEMENTS // per_row)
    result = np.empty(x.shape, dtype)
    for start in range(0, x.shape[0], step):
        stop = min(start + step, x.shape[0])
        sliced = [_rows_of(a, x, start, stop) for a in along]
        result[start:stop] = function(x[start:stop], *sliced)
    return result


def _rows_of(array: np.ndarray, x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``array`` when it runs along ``x``'s first axis, else all of it."""
    if array.ndim == x.ndim and array.shape[0] == x.shape[0] != 1:
        return array[start:stop]
    return array


def along_axis(
    vector: np.ndarray, params: QuantParams, shape: tuple[int, ...], tensor: str | None = None
) -> np.ndarray:
    """``vector`` reshaped to broadcast along ``params.axis`` of an array of ``shape``."""
    if params.axis is None:
        return vector
    ndim = len(shape)
    if not -ndim <= params.axis < ndim or shape[params.axis] != vector.size:
        what = "an array" if tensor is None else f"tensor {tensor!r}"
        raise DataError(
            f"per-channel parameters with {vector.size} channels on axis {params.axis} "
            f"do not fit {what} of shape {shape}"
        )
    broadcast = [1] * ndim
    broadcast[params.axis % ndim] = vector.size
    return vector.reshape(broadcast)
