"""Conv on integers (grouped, depthwise, 1-D to 3-D; ConvTranspose is ``conv_transpose``, §E.3).

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
from eightbit.engine.kernels.conv_transpose import ConvTransposeStep
from eightbit.engine.kernels.conv_wide import WideConv
from eightbit.engine.kernels.gemm import (
    FLOAT32_EXACT,
    SHIFTED_BOUND,
    activation_shift,
    exact_ends,
    exact_sum,
    fits_int32,
)
from eightbit.engine.kernels.requantize import Requantization
from eightbit.engine.kernels.torch_conv import TorchConv
from eightbit.engine.kernels.weighted import add_bias, centered_weight, prepare_weighted
from eightbit.engine.kernels.window import Window, padded, tap_views
from eightbit.engine.operands import NodeToPrepare
from eightbit.engine.program import Step

Index = tuple[Any, ...]


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
    w = centered_weight(weight, w_zero, 0)
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
) -> np.ndarray:
    """The same sums as ``conv_accumulate_reference`` (int64); ``weight_centered`` is
    w − z_w. The fast path bounds its chunks by the weights themselves (``exact_ends``)."""
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
        return _FastConv.of(centered_weight(self.weight, self.weight_zero, 0), self.group)

    @cached_property
    def _torch(self) -> TorchConv | None:
        """The oneDNN form of the weights (packed at the first run), or None for numpy."""
        centered = centered_weight(self.weight, self.weight_zero, 0)
        return TorchConv.prepare(centered, self.window.strides, self.window.dilations, self.group)

    @cached_property
    def _wide(self) -> WideConv:
        """The float64 layout of a 16-bit input's sums (``conv_wide``, §E.13)."""
        return WideConv.of(centered_weight(self.weight, self.weight_zero, 0), self.group)

    @cached_property
    def _bias_column(self) -> np.ndarray | None:
        """The bias as float64 (exact), shaped to broadcast along the output channels."""
        if self.bias is None:
            return None
        return self.bias.astype(np.float64).reshape(-1, *([1] * (self.weight.ndim - 2)))

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
        if self.requantization.rescale.wide and x.dtype == np.int16:
            total = self._wide.sums(x, self.x_zero, self.window, self.group)
            return (self.requantization.apply_sum(total, self._bias_column),)
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
        return (self.requantization.apply_reference(add_bias(acc, self.bias)),)


def prepare_conv(node: NodeToPrepare) -> Step:
    """Conv or ConvTranspose on integers."""
    transpose = node.node.op_type == "ConvTranspose"
    common = prepare_weighted(node, 1 if transpose else 0)
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
