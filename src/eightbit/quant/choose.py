"""Choosing quantization parameters from ranges and weights (docs/numerics.md §Q1-§Q4).

Each function states the equation it implements. Everything here is numpy on plain values:
no graph, no model.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from eightbit.errors import DataError, ModelError
from eightbit.fixed import best_precision_fraction_length
from eightbit.quant.config import QuantConfig
from eightbit.quant.params import QuantParams

# Smallest scale (§Q1 guard): a product of two scales stays a normal float32 and a
# power-of-two fraction length stays a shift of at most 32.
MIN_SCALE = 2.0**-32
MAX_FRACTION_LENGTH = 32
# A quantized bias stays within ±2^30 so the sum of products has the other half of int32.
BIAS_LIMIT = 2**30
_WEIGHT_QMAX = 127
_INT16_QMAX = 32767


def activation_params(lo: float, hi: float, config: QuantConfig) -> QuantParams:
    """Parameters of an activation whose values lie in ``[lo, hi]``.

    affine: the range widened to hold 0 (Q.3), then ``s = (hi − lo)/(qmax − qmin)``,
    ``z = round(qmin − lo/s)`` (Q.4), so real 0 is exactly the integer z.
    pow2: ``s = 2^−f`` with f the best precision of an 8-bit signed word (Q.8), ``z = 0``.
    affine with symmetric activations (target tensorrt): ``s = max(|lo|, |hi|)/127``,
    ``z = 0``, int8 (Q.15).
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise DataError(f"an activation range must be finite (got [{lo}, {hi}])")
    if lo > hi:
        raise DataError(f"an activation range must have min <= max (got [{lo}, {hi}])")
    if config.scheme == "pow2":
        return _pow2_params(best_precision_fraction_length([lo, hi], 8, signed=True))
    if config.symmetric_activations:
        return _symmetric_params(max(abs(lo), abs(hi)))
    dtype = config.activation_type
    low, high = (0, 255) if dtype == "uint8" else (-128, 127)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:  # all zeros: any scale represents them; [0, 1] keeps z = qmin.
        hi = 1.0
    scale = np.float32(max((hi - lo) / (high - low), MIN_SCALE))
    zero_point = round(low - lo / float(scale))  # Python's round is half to even
    zero_point = min(max(zero_point, low), high)
    return QuantParams(np.asarray(scale), np.asarray(zero_point, np.int64), dtype)


def int16_params(lo: float, hi: float, config: QuantConfig) -> QuantParams:
    """Parameters of a 16-bit activation in ``[lo, hi]`` (16x8, Q.16): int16, ``z = 0``,
    ``s = max(|lo|, |hi|)/32767``; pow2: ``s = 2^−f``, f the best precision of 16 bits."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise DataError(f"an activation range must be finite with min <= max (got [{lo}, {hi}])")
    if config.scheme == "pow2":
        length = min(best_precision_fraction_length([lo, hi], 16, signed=True), MAX_FRACTION_LENGTH)
        return QuantParams(np.asarray(2.0**-length, np.float32), np.asarray(0), "int16")
    magnitude = max(abs(lo), abs(hi)) or 1.0
    scale = np.float32(max(magnitude / _INT16_QMAX, MIN_SCALE))
    return QuantParams(np.asarray(scale), np.asarray(0, np.int64), "int16")


def weight_params(
    weights: npt.ArrayLike, axis: int | None, config: QuantConfig, *, name: str = "weight"
) -> QuantParams:
    """Symmetric narrow-range int8 parameters of a weight tensor (Q.5), per ``axis`` or per tensor.

    ``axis`` is the output-channel axis, or None for one scale for the whole tensor.
    affine: ``s_c = max|W_c| / 127``; pow2: ``s_c = 2^−f_c`` with f_c the best precision of
    ``max|W_c|``. A channel of zeros takes the per-tensor scale (§Q2).
    """
    # Extremes are exact in the weights' own type: no float64 copy of a 400 MB weight.
    w = np.asarray(weights)
    if not np.issubdtype(w.dtype, np.floating):
        w = w.astype(np.float64)
    if w.size and not (np.isfinite(w.min()) and np.isfinite(w.max())):  # NaN propagates
        raise ModelError(f"{name} contains NaN or infinite values; fix the float model first")
    if axis is not None and not -w.ndim <= axis < w.ndim:
        raise ModelError(f"{name} of shape {w.shape} has no channel axis {axis}")
    tensor_max = float(max(w.max(), -w.min())) if w.size else 0.0
    if axis is None:
        channel_max = np.asarray(tensor_max)
    else:
        axis %= w.ndim
        others = tuple(i for i in range(w.ndim) if i != axis)
        channel_max = (
            np.maximum(w.max(axis=others), -w.min(axis=others)).astype(np.float64)
            if w.size
            else np.zeros(w.shape[axis])
        )
        channel_max = np.where(channel_max > 0, channel_max, tensor_max)
    if config.scheme == "pow2":
        lengths = [best_precision_fraction_length([m], 8, signed=True) for m in channel_max.flat]
        scale = np.exp2(-np.minimum(np.array(lengths, dtype=np.float64), MAX_FRACTION_LENGTH))
    else:
        scale = np.where(channel_max > 0, channel_max, 1.0) / _WEIGHT_QMAX
    scale = np.maximum(scale, MIN_SCALE).astype(np.float32).reshape(channel_max.shape)
    return QuantParams(scale, np.zeros(scale.shape, np.int64), "int8", axis, narrow_range=True)


def bias_params(input_params: QuantParams, weight_params: QuantParams) -> QuantParams:
    """int32 parameters of a bias: ``s_b = float32(s_x · s_w)``, ``z = 0`` (Q.6).

    Per-channel weights give a per-channel bias on axis 0 (a bias is 1-D).
    """
    if input_params.per_channel:
        raise ModelError("an activation feeding a weighted op must have per-tensor parameters")
    scale = (input_params.scale * weight_params.scale).astype(np.float32)
    axis = None if weight_params.axis is None else 0
    return QuantParams(scale, np.zeros(scale.shape, np.int64), "int32", axis)


def fit_weight_to_bias(
    bias: npt.ArrayLike, input_params: QuantParams, weight_params: QuantParams
) -> tuple[QuantParams, tuple[int, ...]]:
    """Widen weight scales so that ``|bias / (s_x · s_w)| <= 2^30`` (Q.7).

    Returns the (possibly unchanged) weight parameters and the widened channels (``(0,)``
    for per-tensor weights). Widening keeps the bias exact; clamping it would not (§Q3).
    """
    b = np.abs(np.asarray(bias, dtype=np.float64)).reshape(-1)
    # One magnitude per weight scale: per channel, or the largest for a per-tensor scale.
    needed = b if weight_params.per_channel else np.array([b.max() if b.size else 0.0])
    if needed.size != weight_params.scale.size:
        raise ModelError(
            f"a bias of {b.size} values does not match {weight_params.scale.size} weight channels"
        )
    pow2 = weight_params.fraction_lengths is not None
    input_scale = float(input_params.scale)
    # Every channel checked at once (a fallback re-plans the whole model per rebuild); the
    # loop below widens only the channels that do not fit, usually none.
    short = np.flatnonzero(~_biases_fit(needed, input_scale, weight_params.scale.reshape(-1)))
    if short.size == 0:
        return weight_params, ()
    scales = [float(s) for s in weight_params.scale.reshape(-1)]
    widened = []
    for channel in short.tolist():
        magnitude = float(needed[channel])
        target = magnitude / (input_scale * BIAS_LIMIT)
        candidate = float(np.float32(2.0 ** math.ceil(math.log2(target)) if pow2 else target))
        while not _bias_fits(magnitude, input_scale, candidate):
            # Float32 rounding may land just below the target: step up until it fits.
            candidate = candidate * 2 if pow2 else float(np.nextafter(np.float32(candidate), 1e38))
        scales[channel] = candidate
        widened.append(channel)
    fitted = QuantParams(
        np.array(scales, dtype=np.float32).reshape(weight_params.scale.shape),
        weight_params.zero_point,
        weight_params.dtype,
        weight_params.axis,
        weight_params.narrow_range,
    )
    return fitted, tuple(widened)


def constant_params(values: npt.ArrayLike, config: QuantConfig) -> QuantParams:
    """Activation-type parameters of a constant operand, from its own min and max (§Q8)."""
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ModelError("a constant operand contains NaN or infinite values")
    if array.size == 0:
        return activation_params(0.0, 0.0, config)
    return activation_params(float(array.min()), float(array.max()), config)


def _biases_fit(
    magnitudes: np.ndarray, input_scale: float, weight_scales: np.ndarray
) -> np.ndarray:
    """``_bias_fits`` of each channel: the same float32 product, the same float64 test."""
    bias_scales = (np.float32(input_scale) * weight_scales.astype(np.float32)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (bias_scales > 0) & (magnitudes / bias_scales <= BIAS_LIMIT)


def _bias_fits(magnitude: float, input_scale: float, weight_scale: float) -> bool:
    bias_scale = float(np.float32(input_scale) * np.float32(weight_scale))
    return bias_scale > 0 and magnitude / bias_scale <= BIAS_LIMIT


def _symmetric_params(magnitude: float) -> QuantParams:
    """int8, ``z = 0``, ``[−m, m]`` onto ``[−127, 127]`` (Q.15); all zeros as ``m = 1``."""
    scale = np.float32(max((magnitude or 1.0) / _WEIGHT_QMAX, MIN_SCALE))
    return QuantParams(np.asarray(scale), np.asarray(0, np.int64), "int8")


def _pow2_params(fraction_length: int) -> QuantParams:
    fraction_length = min(fraction_length, MAX_FRACTION_LENGTH)
    return QuantParams(np.asarray(2.0**-fraction_length, np.float32), np.asarray(0), "int8")
