"""Convolutions: Conv (grouped, depthwise, 1-D to 3-D) and ConvTranspose (§E.3).

    acc[n, c, p] = Σ_{i, k} (x[n, i, p·stride + k·dilation − pad] − z_x) · (w[c, i, k] − z_w[c])
                   + bias[c]
    y = clamp(z_y + requantize(acc, M_c, shift_c))

A padded position holds real 0, which is z_x, so it adds nothing to the sum.
``conv_accumulate_reference`` is the definition (a loop over output positions, int64);
``conv_accumulate`` builds the windows as columns (im2col) and sums them exactly with
``exact_sum``, or for depthwise convolutions as one multiply-add per kernel tap; with torch
installed, 1-D and 2-D Convs sum on oneDNN instead (``torch_conv``, the same integers).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from eightbit.engine.kernels import torch_conv
from eightbit.engine.kernels._scratch import scratch
from eightbit.engine.kernels.gemm import (
    FLOAT32_EXACT,
    SHIFTED_BOUND,
    accumulator_bias,
    activation_shift,
    exact_ends,
    exact_matmul,
    exact_sum,
    fits_int32,
)
from eightbit.engine.kernels.requantize import Requantization
from eightbit.engine.kernels.torch_conv import TorchConv
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
from eightbit.fixed import float32_scale_ratio

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
    """The same sums as ``conv_accumulate_reference`` (int64); ``weight_centered`` is
    w − z_w. ``bound`` is kept for callers; the fast path bounds its chunks by the weights
    themselves (``exact_ends``)."""
    del bound
    weight = np.asarray(weight_centered).astype(np.int64)
    shift = activation_shift(x.dtype)
    if shift is None:  # not an 8-bit activation: the definition
        return conv_accumulate_reference(x, weight, x_zero, 0, window, group)
    fast = _FastConv.of(weight, group)
    on_torch = TorchConv.prepare(weight, window.strides, window.dilations, group)
    total = _conv_sum(x, fast, shift, x_zero, window, group, on_torch)
    correction = fast.correction(shift, x_zero)
    return total.astype(np.int64) + correction.reshape(-1, *([1] * (total.ndim - 2)))


@dataclass(frozen=True, eq=False)
class _FastConv:
    """What the fast Conv kernel prepares once from the centred weights w' = w − z_w.

    The activations are shifted, x' = x − s with s = 128 (uint8) or 0 (int8), so that
    |x'| <= 128; since x − z_x = x' + (s − z_x),

        Σ_k (x_k − z_x) · w'_k = Σ_k x'_k · w'_k + (s − z_x) · Σ_k w'_k,

    the second term a per-channel constant (``correction``), and a padded cell holds
    x' = z_x − s (real 0). The matrix orders the reduction tap-major (tap, channel) so
    that im2col copies one contiguous block per tap.
    """

    matrix: np.ndarray  # (G, C_out/G, taps · C_in/G) float32
    ends: tuple[int, ...]  # exact_ends of the matrix rows
    sums: np.ndarray  # Σ_k w'[c, k], int64 (C_out,)
    depthwise: np.ndarray | None  # (C, taps), float32 or float64 (exact type), or None

    @classmethod
    def of(cls, weight: np.ndarray, group: int) -> _FastConv:
        """From the centred int64 weight (C_out, C_in/G, kernel...)."""
        out_channels, group_channels = weight.shape[:2]
        flat = weight.reshape(out_channels, group_channels, -1)
        sums = flat.sum(axis=(1, 2))
        depthwise = None
        if group_channels == 1 and out_channels == group:
            taps = flat[:, 0, :]
            largest = int(np.abs(taps).sum(axis=1).max()) if taps.size else 0
            exact = np.float32 if SHIFTED_BOUND * largest <= FLOAT32_EXACT else np.float64
            depthwise = taps.astype(exact)
        tap_major = np.swapaxes(flat, 1, 2).reshape(group, out_channels // group, -1)
        matrix = np.ascontiguousarray(tap_major, dtype=np.float32)
        return cls(matrix, exact_ends(tap_major), sums, depthwise)

    def correction(self, shift: int, x_zero: int) -> np.ndarray:
        """(s − z_x) · Σ_k w'[c, k] per output channel, int64."""
        return (shift - x_zero) * self.sums


def _conv_sum(
    x: np.ndarray,
    fast: _FastConv,
    shift: int,
    x_zero: int,
    window: Window,
    group: int,
    on_torch: TorchConv | None = None,
) -> np.ndarray:
    """Σ_k x'_k · w'_k for every output (N, C_out, out...), exact, as a float array (a
    work buffer on the numpy path); on oneDNN through torch when ``on_torch`` is given and
    torch may be used now (``torch_conv``), else on numpy's BLAS."""
    pads, out_shape = window.resolve(x.shape[2:])
    source = _shifted_source(x, shift, x_zero - shift, pads)
    if on_torch is not None:
        total = on_torch(source)
        if total is not None:
            return total
    batch, channels = x.shape[:2]
    if fast.depthwise is not None:
        return _depthwise(source, fast.depthwise, window, out_shape)
    group_channels = channels // group
    positions = int(np.prod(out_shape))
    plain = all(k == 1 for k in window.kernel) and all(st == 1 for st in window.strides)
    if plain and not any(pads):  # a 1x1 convolution: the input is the matrix
        columns = source.reshape(batch, group, group_channels, positions)
    else:
        taps = list(tap_views(source, window, out_shape))
        columns = scratch(
            "conv.columns", (batch, group, len(taps), group_channels, *out_shape), np.float32
        )
        for index, (_, cells) in enumerate(taps):
            columns[:, :, index] = cells.reshape(batch, group, group_channels, *out_shape)
        columns = columns.reshape(batch, group, len(taps) * group_channels, positions)
    total = exact_sum(fast.matrix, columns, fast.ends, "conv.sum")  # (N, G, C_out/G, P)
    return total.reshape(batch, -1, *out_shape)


def _shifted_source(x: np.ndarray, shift: int, pad_value: int, pads: tuple[int, ...]) -> np.ndarray:
    """x − shift as float32 in a work buffer, padded with ``pad_value`` (z_x − shift)."""
    rank = x.ndim - 2
    shape = (*x.shape[:2], *(x.shape[2 + i] + pads[i] + pads[i + rank] for i in range(rank)))
    source = scratch("conv.source", shape, np.float32)
    inner: Index = tuple(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(rank))
    np.subtract(x, np.float32(shift), out=source[(slice(None), slice(None), *inner)])
    for i in range(rank):
        before: Index = (slice(None), slice(None), *inner[:i], slice(0, pads[i]))
        after: Index = (
            slice(None),
            slice(None),
            *inner[:i],
            slice(shape[2 + i] - pads[i + rank], None),
        )
        source[before] = pad_value
        source[after] = pad_value
    return source


def _depthwise(
    source: np.ndarray, taps: np.ndarray, window: Window, out_shape: tuple[int, ...]
) -> np.ndarray:
    """One channel per group: a multiply-add per kernel tap in ``taps.dtype``, exact
    because every running sum is bounded by 128 · Σ_t |w'[c, t]| (float32 when that is at
    most 2^24, else float64)."""
    channels = taps.shape[0]
    shape = (source.shape[0], channels, *out_shape)
    acc = scratch("conv.sum", shape, taps.dtype)
    product = scratch("conv.tap", shape, taps.dtype)
    column_shape = (channels, *([1] * len(out_shape)))
    for index, (_, cells) in enumerate(tap_views(source, window, out_shape)):
        column = taps[:, index].reshape(column_shape)
        if index == 0:
            np.multiply(cells, column, out=acc)
        else:
            np.multiply(cells, column, out=product)
            acc += product
    return acc


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
    def _fast(self) -> _FastConv:
        return _FastConv.of(_centered_weight(self.weight, self.weight_zero, 0), self.group)

    @cached_property
    def _torch(self) -> TorchConv | None:
        """The oneDNN form of the weights (packed at the first run), or None for numpy."""
        centered = _centered_weight(self.weight, self.weight_zero, 0)
        return TorchConv.prepare(centered, self.window.strides, self.window.dilations, self.group)

    @cached_property
    def _bounded(self) -> bool:
        return fits_int32(self.weight[0].size, self.bound, self.bias)

    @cached_property
    def _biases(self) -> dict[int, np.ndarray]:
        """bias + correction per channel (float64, exact) for each shift s, computed once."""
        shape = (-1, *([1] * (self.weight.ndim - 2)))
        bias = 0 if self.bias is None else self.bias
        return {
            s: (bias + self._fast.correction(s, self.x_zero)).astype(np.float64).reshape(shape)
            for s in (0, 128)
        }

    @cached_property
    def _in_float(self) -> bool:
        """Whether requantization may run in float64 (``Requantization.exact_in_float64``
        for |acc| <= 255 · Σ_k |w'[c, k]| + |bias[c]|)."""
        if not self._bounded:
            return False
        largest = 255 * np.abs(self._fast.matrix.astype(np.int64)).sum(axis=-1).reshape(-1)
        if self.bias is not None:
            largest = largest + np.abs(self.bias)
        return self.requantization.exact_in_float64(largest)

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        x = args[0]
        shift = activation_shift(x.dtype)
        if shift is None:
            return self.run_reference(*args)
        total = _conv_sum(x, self._fast, shift, self.x_zero, self.window, self.group, self._torch)
        return (
            self.requantization.apply_sum(
                total, self._biases[shift], bounded=self._bounded, in_float=self._in_float
            ),
        )

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
    real = float32_scale_ratio(x_scale, w.params.scale, scalar_scale(out.params, "output", node))
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
    torch_conv.load()  # before any run, so that thread limits set then cover torch's OpenMP
    if transpose:
        return ConvTransposeStep(**fields, attrs=dict(node.node.attrs))
    kernel = tuple(node.attr("kernel_shape", None) or common.weight.shape[2:])
    return ConvStep(**fields, window=Window.from_attrs(dict(node.node.attrs), kernel))
