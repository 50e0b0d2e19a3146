"""What Conv and ConvTranspose prepare alike (§E.3): centred weights, the accumulator
bias, and the requantization of the output."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eightbit.engine.kernels.gemm import accumulator_bias
from eightbit.engine.kernels.requantize import Requantization, fits_wide, needs_wide
from eightbit.engine.operands import (
    IntegerConstant,
    NodeToPrepare,
    largest_offset,
    scalar_scale,
    scalar_zero_point,
)
from eightbit.fixed import float32_scale_ratio


def centered_weight(weight: np.ndarray, w_zero: np.ndarray | int, axis: int) -> np.ndarray:
    zero = np.asarray(w_zero, dtype=np.int64)
    if zero.ndim == 1:
        shape = [1] * weight.ndim
        shape[axis] = zero.size
        zero = zero.reshape(shape)
    return weight.astype(np.int64) - zero


def add_bias(acc: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is None:
        return acc
    return acc + bias.reshape(-1, *([1] * (acc.ndim - 2)))


@dataclass(frozen=True, eq=False)
class Weighted:
    """What Conv and ConvTranspose prepare alike: operands, bias, requantization."""

    x_name: str
    out_name: str
    weight: np.ndarray
    weight_zero: np.ndarray
    x_zero: int
    bias: np.ndarray | None
    requantization: Requantization
    bound: int


def prepare_weighted(node: NodeToPrepare, channel_axis: int) -> Weighted:
    x = node.activation(0)
    w = node.integer(1)
    out = node.output(0)
    if not isinstance(w, IntegerConstant):
        raise node.refuse("the weight must be a constant")
    weight = np.asarray(w.values)
    if w.params.axis is not None and w.params.axis % weight.ndim != channel_axis:
        raise node.refuse(f"weight scales must run along output channels (axis {channel_axis})")
    if w.params.axis is not None and node.attr("group", 1) != 1 and channel_axis == 1:
        raise node.refuse("a grouped ConvTranspose needs per-tensor weight scales")
    channels = weight.shape[channel_axis] * (int(node.attr("group", 1)) if channel_axis else 1)
    x_scale = scalar_scale(x.params, "the input", node)
    w_scales = np.broadcast_to(w.params.scale.astype(np.float64), (channels,))
    bias_operand = node.operand(2)
    bias = None
    if isinstance(bias_operand, IntegerConstant):
        bias = accumulator_bias(bias_operand, x_scale, w_scales)
    elif bias_operand is not None:
        raise node.refuse("the bias must be a quantized constant")
    real = float32_scale_ratio(x_scale, w.params.scale, scalar_scale(out.params, "output", node))
    wide = needs_wide(x.params.dtype)
    requantization = Requantization.from_real(
        real,
        scalar_zero_point(out.params, "the output", node),
        out.params.dtype,
        axis=1 if real.ndim else None,
        wide=wide,
    )
    bound = largest_offset(x.params) * largest_offset(w.params)
    group = int(node.attr("group", 1))
    terms = weight[0].size if channel_axis == 0 else weight.shape[0] // group * weight[0, 0].size
    if wide and not fits_wide(terms, bound, bias):
        raise node.refuse(f"a 16x8 sum of {terms} terms may reach 2^39 (§E.13)")
    return Weighted(
        x_name=x.name,
        out_name=out.name,
        weight=weight,
        weight_zero=w.params.zero_point.astype(np.int64),
        x_zero=scalar_zero_point(x.params, "the input", node),
        bias=bias,
        requantization=requantization,
        bound=bound,
    )
