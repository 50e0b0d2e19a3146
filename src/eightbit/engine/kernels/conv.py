"""Convolutions: Conv (grouped, depthwise, 1-D to 3-D) and ConvTranspose (§E.3).

    acc[n, c, p] = Σ_{i, k} (x[n, i, p·stride + k·dilation − pad] − z_x) · (w[c, i, k] − z_w[c])
                   + bias[c]
    y = clamp(z_y + requantize(acc, M_c, shift_c))

A padded position holds real 0, which is z_x, so it adds nothing to the sum.
``conv_accumulate_reference`` is the definition (a loop over output positions, int64);
``conv_accumulate`` builds the windows as columns (im2col) and sums them exactly with
``exact_matmul``, or for depthwise convolutions as one multiply-add per kernel tap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from eightbit.engine.kernels.gemm import accumulator_bias, exact_matmul, fits_int32
from eightbit.engine.kernels.requantize import Requantization
from eightbit.engine.kernels.window import Window, padded, tap_views
from eightbit.engine.operands import (
    IntegerConstant,
    NodeToPrepare,
    largest_offset,
    scalar_scale,
    scalar_zero_point,
)
from eightbit.engine.program import Step
from eightbit.errors import ModelError

Index = tuple[Any, ...]


def _centered_weight(weight: np.ndarray, w_zero: np.ndarray | int, axis: int) -> np.ndarray:
    zero = np.asarray(w_zero, dtype=np.int64)
    if zero.ndim == 1:
        shape = [1] * weight.ndim
        shape[axis] = zero.size
        zero = zero.reshape(shape)
    return weight.astype(np.int64) - zero


def conv_accumulate_reference(
    x: np.ndarray,
    weight: np.ndarray,
    x_zero: int,
    w_zero: np.ndarray | int,
    window: Window,
    group: int,
) -> np.ndarray:
    """The definition: for every output position, the int64 sum over its window."""
    pads, out_shape = window.resolve(x.shape[2:])
    xc = padded(x.astype(np.int64) - x_zero, pads, 0)
    w = _centered_weight(weight, w_zero, 0)
    batch = x.shape[0]
    out_channels, group_channels = w.shape[:2]
    per_group = out_channels // group
    acc = np.zeros((batch, out_channels, *out_shape), dtype=np.int64)
    for position in itertools.product(*(range(size) for size in out_shape)):
        region: Index = tuple(
            slice(
                p * window.strides[i],
                p * window.strides[i] + window.dilations[i] * (window.kernel[i] - 1) + 1,
                window.dilations[i],
            )
            for i, p in enumerate(position)
        )
        for c in range(out_channels):
            g = c // per_group
            channels = slice(g * group_channels, (g + 1) * group_channels)
            cells = xc[(slice(None), channels, *region)]
            target: Index = (slice(None), c, *position)
            acc[target] = np.sum(cells * w[c], axis=tuple(range(1, cells.ndim)))
    return acc


def conv_accumulate(
    x: np.ndarray,
    weight_centered: np.ndarray,
    x_zero: int,
    window: Window,
    group: int,
    bound: int,
) -> np.ndarray:
    """The same sums as ``conv_accumulate_reference``; ``weight_centered`` is w − z_w (float32)."""
    pads, out_shape = window.resolve(x.shape[2:])
    centered = x.astype(np.float32)
    centered -= np.float32(x_zero)
    source = padded(centered, pads, 0.0)
    batch, channels = x.shape[:2]
    out_channels, group_channels = weight_centered.shape[:2]
    if group == channels and group_channels == 1 and out_channels == channels:
        return _depthwise(source, weight_centered, window, out_shape, bound)
    # The im2col matrix (N, C, taps, positions), filled one tap at a time.
    count = int(np.prod(window.kernel))
    columns = np.empty((batch, channels, count, *out_shape), dtype=np.float32)
    for index, (_, cells) in enumerate(tap_views(source, window, out_shape)):
        columns[:, :, index] = cells
    columns = columns.reshape(batch, group, group_channels * count, -1)
    kernels = weight_centered.reshape(group, out_channels // group, group_channels * count)
    acc = exact_matmul(kernels, columns, bound)  # (N, G, C_out/G, positions)
    return acc.reshape(batch, out_channels, *out_shape)


def _depthwise(
    source: np.ndarray,
    weight_centered: np.ndarray,
    window: Window,
    out_shape: tuple[int, ...],
    bound: int,
) -> np.ndarray:
    """One channel per group: a multiply-add per kernel tap, exact in float32 while the
    window holds at most 2^24 / bound taps (checked), else in float64."""
    channels = weight_centered.shape[0]
    count = int(np.prod(window.kernel))
    exact_type = np.float32 if count * bound <= 2**24 else np.float64
    acc = np.zeros((source.shape[0], channels, *out_shape), dtype=exact_type)
    shape = (channels, *([1] * len(out_shape)))
    for tap, cells in tap_views(source, window, out_shape):
        column: Index = (slice(None), 0, *tap)
        acc += cells * weight_centered[column].astype(exact_type).reshape(shape)
    return acc.astype(np.int64)


@dataclass(frozen=True, eq=False)
class ConvStep(Step):
    """Conv on a run-time input ``inputs[0]`` with a constant int8 ``weight``."""

    weight: np.ndarray
    weight_zero: np.ndarray
    x_zero: int
    bias: np.ndarray | None
    window: Window
    group: int
    requantization: Requantization
    bound: int

    kind = "Conv"

    @cached_property
    def _weight_centered(self) -> np.ndarray:
        return _centered_weight(self.weight, self.weight_zero, 0).astype(np.float32)

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        acc = conv_accumulate(
            args[0], self._weight_centered, self.x_zero, self.window, self.group, self.bound
        )
        bounded = fits_int32(self.weight[0].size, self.bound, self.bias)
        return (self.requantization.apply(_add_bias(acc, self.bias), bounded=bounded),)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        acc = conv_accumulate_reference(
            args[0], self.weight, self.x_zero, self.weight_zero, self.window, self.group
        )
        return (self.requantization.apply_reference(_add_bias(acc, self.bias)),)


def conv_transpose_accumulate_reference(
    x: np.ndarray,
    weight: np.ndarray,
    x_zero: int,
    w_zero: np.ndarray | int,
    geometry: TransposeGeometry,
    group: int,
) -> np.ndarray:
    """The definition: every input value times every tap, added where the tap lands."""
    xc = x.astype(np.int64) - x_zero
    w = _centered_weight(weight, w_zero, 1)
    in_channels, per_group = w.shape[:2]
    group_channels = in_channels // group
    full = np.zeros((x.shape[0], per_group * group, *geometry.full_shape), dtype=np.int64)
    spatial = x.shape[2:]
    for position in itertools.product(*(range(size) for size in spatial)):
        for tap in itertools.product(*(range(k) for k in w.shape[2:])):
            landing = tuple(
                p * s + k * d
                for p, k, s, d in zip(
                    position, tap, geometry.strides, geometry.dilations, strict=True
                )
            )
            for g in range(group):
                sources = slice(g * group_channels, (g + 1) * group_channels)
                targets = slice(g * per_group, (g + 1) * per_group)
                read: Index = (slice(None), sources, *position)
                tap_weights: Index = (sources, slice(None), *tap)
                written: Index = (slice(None), targets, *landing)
                full[written] += xc[read] @ w[tap_weights]
    return geometry.crop(full)


def conv_transpose_accumulate(
    x: np.ndarray,
    weight_centered: np.ndarray,
    x_zero: int,
    geometry: TransposeGeometry,
    group: int,
    bound: int,
) -> np.ndarray:
    """The same sums: one exact matmul per group gives every (tap, input position)
    product sum; each tap's plane is then added into the output at its stride."""
    batch, in_channels = x.shape[:2]
    spatial = x.shape[2:]
    per_group = weight_centered.shape[1]
    kernel = weight_centered.shape[2:]
    taps = int(np.prod(kernel))
    centered = x.astype(np.float32)
    centered -= np.float32(x_zero)
    columns = centered.reshape(batch, group, in_channels // group, -1)  # (N, G, C/G, P)
    kernels = weight_centered.reshape(group, in_channels // group, per_group * taps)
    products = exact_matmul(np.swapaxes(kernels, -1, -2), columns, bound)  # (N,G,Co/G·taps,P)
    products = products.reshape(batch, group * per_group, *kernel, *spatial)
    full = np.zeros((batch, group * per_group, *geometry.full_shape), dtype=np.int64)
    rank = len(spatial)
    for tap in itertools.product(*(range(k) for k in kernel)):
        region: Index = tuple(
            slice(
                tap[i] * geometry.dilations[i],
                tap[i] * geometry.dilations[i] + (spatial[i] - 1) * geometry.strides[i] + 1,
                geometry.strides[i],
            )
            for i in range(rank)
        )
        plane: Index = (slice(None), slice(None), *tap)
        full[(slice(None), slice(None), *region)] += products[plane]
    return geometry.crop(full)


@dataclass(frozen=True)
class TransposeGeometry:
    """Where ConvTranspose writes: the uncropped output and the crop (ONNX's rules)."""

    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    full_shape: tuple[int, ...]
    begin: tuple[int, ...]
    out_shape: tuple[int, ...]

    @classmethod
    def of(
        cls, attrs: dict[str, Any], kernel: tuple[int, ...], spatial: tuple[int, ...]
    ) -> TransposeGeometry:
        rank = len(kernel)

        def ints(name: str, default: int, count: int = rank) -> tuple[int, ...]:
            return tuple(int(v) for v in attrs.get(name) or [default] * count)

        strides, dilations = ints("strides", 1), ints("dilations", 1)
        extra = ints("output_padding", 0)
        auto_pad = attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        full = tuple(
            strides[i] * (spatial[i] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
            for i in range(rank)
        )
        if attrs.get("output_shape") is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if attrs.get("output_shape") is not None:
                out = ints("output_shape", 0)[-rank:]
            else:
                out = tuple(spatial[i] * strides[i] for i in range(rank))
            total = [full[i] - out[i] for i in range(rank)]
            # SAME_UPPER puts the odd cell of padding at the end, SAME_LOWER and NOTSET
            # (an explicit output_shape) at the start.
            upper = auto_pad == "SAME_UPPER"
            begin = tuple(t // 2 if upper else t - t // 2 for t in total)
        else:
            pads = ints("pads", 0, 2 * rank)
            begin = pads[:rank]
            out = tuple(full[i] - pads[i] - pads[i + rank] for i in range(rank))
        if min(begin) < 0:
            raise ModelError(f"ConvTranspose output_shape {list(out)} needs negative padding")
        # An output_shape one cell past what the kernel reaches reads zeros there.
        full = tuple(max(f, b + o) for f, b, o in zip(full, begin, out, strict=True))
        return cls(strides, dilations, full, begin, out)

    def crop(self, full: np.ndarray) -> np.ndarray:
        region: Index = tuple(
            slice(b, b + size) for b, size in zip(self.begin, self.out_shape, strict=True)
        )
        return full[(slice(None), slice(None), *region)]


@dataclass(frozen=True, eq=False)
class ConvTransposeStep(Step):
    weight: np.ndarray
    weight_zero: np.ndarray
    x_zero: int
    bias: np.ndarray | None
    attrs: dict[str, Any]
    group: int
    requantization: Requantization
    bound: int

    kind = "ConvTranspose"

    @cached_property
    def _weight_centered(self) -> np.ndarray:
        return _centered_weight(self.weight, self.weight_zero, 1).astype(np.float32)

    def _geometry(self, x: np.ndarray) -> TransposeGeometry:
        return TransposeGeometry.of(self.attrs, self.weight.shape[2:], x.shape[2:])

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        geometry = self._geometry(args[0])
        acc = conv_transpose_accumulate(
            args[0], self._weight_centered, self.x_zero, geometry, self.group, self.bound
        )
        # An output cell gathers at most C_in/group · taps products.
        terms = self.weight.shape[0] // self.group * int(np.prod(self.weight.shape[2:]))
        bounded = fits_int32(terms, self.bound, self.bias)
        return (self.requantization.apply(_add_bias(acc, self.bias), bounded=bounded),)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        geometry = self._geometry(args[0])
        acc = conv_transpose_accumulate_reference(
            args[0], self.weight, self.x_zero, self.weight_zero, geometry, self.group
        )
        return (self.requantization.apply_reference(_add_bias(acc, self.bias)),)


def _add_bias(acc: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is None:
        return acc
    return acc + bias.reshape(-1, *([1] * (acc.ndim - 2)))


@dataclass(frozen=True, eq=False)
class _Weighted:
    """What Conv and ConvTranspose prepare alike: operands, bias, requantization."""

    x_name: str
    out_name: str
    weight: np.ndarray
    weight_zero: np.ndarray
    x_zero: int
    bias: np.ndarray | None
    requantization: Requantization
    bound: int


def _prepare_weighted(node: NodeToPrepare, channel_axis: int) -> _Weighted:
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
    real = x_scale * w.params.scale.astype(np.float64) / scalar_scale(out.params, "output", node)
    requantization = Requantization.from_real(
        real,
        scalar_zero_point(out.params, "the output", node),
        out.params.dtype,
        axis=1 if real.ndim else None,
    )
    return _Weighted(
        x_name=x.name,
        out_name=out.name,
        weight=weight,
        weight_zero=w.params.zero_point.astype(np.int64),
        x_zero=scalar_zero_point(x.params, "the input", node),
        bias=bias,
        requantization=requantization,
        bound=largest_offset(x.params) * largest_offset(w.params),
    )


def prepare_conv(node: NodeToPrepare) -> Step:
    """Conv or ConvTranspose on integers."""
    transpose = node.node.op_type == "ConvTranspose"
    common = _prepare_weighted(node, 1 if transpose else 0)
    fields: dict[str, Any] = {
        "node": node.node.name,
        "inputs": (common.x_name,),
        "outputs": (common.out_name,),
        "weight": common.weight,
        "weight_zero": common.weight_zero,
        "x_zero": common.x_zero,
        "bias": common.bias,
        "group": int(node.attr("group", 1)),
        "requantization": common.requantization,
        "bound": common.bound,
    }
    if transpose:
        return ConvTransposeStep(**fields, attrs=dict(node.node.attrs))
    kernel = tuple(node.attr("kernel_shape", None) or common.weight.shape[2:])
    return ConvStep(**fields, window=Window.from_attrs(dict(node.node.attrs), kernel))
