"""Quantize and dequantize arrays with ``QuantParams`` (docs/numerics.md §Q, eqs. Q.1, Q.2)."""

from __future__ import annotations

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
    # The quotient is clipped before the cast so that huge values saturate, not wrap.
    limit = np.float64(2**40)
    rounded = np.rint(np.clip(x / scale, -limit, limit)).astype(np.int64)
    return np.clip(rounded + zero_point, params.qmin, params.qmax).astype(params.numpy_dtype)


def dequantize_values(q: npt.ArrayLike, params: QuantParams) -> np.ndarray:
    """``scale · (q − zero_point)`` in float32, as ONNX DequantizeLinear."""
    stored = np.asarray(q).astype(np.int64)
    scale = along_axis(params.scale, params, stored.shape)
    zero_point = along_axis(params.zero_point, params, stored.shape)
    return ((stored - zero_point).astype(np.float32) * scale).astype(np.float32)


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
