"""Pools on integers (§E.6): MaxPool, AveragePool, GlobalAveragePool.

MaxPool takes the largest stored integer of each window: quantization is monotone, so the
largest integer is the quantized largest value, and the output keeps the input's
parameters. An average rounds once, with the count folded into the multiplier:

    acc = Σ_window (q − z_x)            (padding is real 0: it adds nothing)
    y   = clamp(z_y + rescale(acc, s_x / (s_y · n)))

where n counts the window's input cells (and its padding cells with count_include_pad).
Prepare computes one multiplier per possible n (1 … kernel size); Eval picks by n.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from eightbit.engine.kernels.requantize import Requantization, Rescale, storage_type
from eightbit.engine.kernels.window import Window, padded, tap_views
from eightbit.engine.operands import (
    NodeToPrepare,
    largest_offset,
    scalar_scale,
    scalar_zero_point,
)
from eightbit.engine.program import Step
from eightbit.errors import DataError

Index = tuple[Any, ...]


@dataclass(frozen=True, eq=False)
class MaxPoolStep(Step):
    window: Window

    kind = "MaxPool"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        x = args[0]
        pads, out_shape = self.window.resolve(x.shape[2:])
        lowest = np.iinfo(x.dtype).min  # never above a real cell, so padding never wins
        result: np.ndarray | None = None
        for _, cells in tap_views(padded(x, pads, lowest), self.window, out_shape):
            result = cells.copy() if result is None else np.maximum(result, cells, out=result)
        assert result is not None
        return (result,)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        x = args[0]
        pads, out_shape = self.window.resolve(x.shape[2:])
        out = np.empty((*x.shape[:2], *out_shape), dtype=x.dtype)
        for position in itertools.product(*(range(size) for size in out_shape)):
            cells = _window_cells(x, self.window, pads, position)
            target: Index = (slice(None), slice(None), *position)
            out[target] = cells.max(axis=-1)
        return (out,)


def _window_cells(
    x: np.ndarray, window: Window, pads: tuple[int, ...], position: tuple[int, ...]
) -> np.ndarray:
    """(N, C, cells) of the input cells (padding left out) of the window at ``position``."""
    rank = len(position)
    region = []
    for i, p in enumerate(position):
        taps = [
            p * window.strides[i] - pads[i] + k * window.dilations[i]
            for k in range(window.kernel[i])
        ]
        region.append([t for t in taps if 0 <= t < x.shape[2 + i]])
    selected: Index = (slice(None), slice(None), *np.ix_(*region))
    cells = x[selected] if rank else x
    return cells.reshape(*x.shape[:2], -1)


def window_counts(
    window: Window,
    spatial: tuple[int, ...],
    pads: tuple[int, ...],
    out_shape: tuple[int, ...],
    include_pad: bool,
    explicit_pads: tuple[int, ...],
) -> np.ndarray:
    """n for every output position: taps on input cells (or on explicit padding too)."""
    rank = len(spatial)
    counts = np.ones(out_shape, dtype=np.int64)
    for i in range(rank):
        start = np.arange(out_shape[i]) * window.strides[i] - pads[i]
        taps = start[:, None] + np.arange(window.kernel[i]) * window.dilations[i]
        low, high = 0, spatial[i]
        if include_pad:
            low, high = -explicit_pads[i], spatial[i] + explicit_pads[i + rank]
        per_axis = ((taps >= low) & (taps < high)).sum(axis=1)
        shape = [1] * rank
        shape[i] = out_shape[i]
        counts = counts * per_axis.reshape(shape)
    return counts


@dataclass(frozen=True, eq=False)
class AveragePoolStep(Step):
    """``window`` None for GlobalAveragePool. ``by_count`` holds M and shift for each n."""

    window: Window | None
    include_pad: bool
    x_zero: int
    by_count: Rescale  # 1-D tables indexed by n
    zero_point: int
    dtype: str

    kind = "AveragePool"

    def _store(self, x: np.ndarray) -> tuple[Requantization, tuple[int, ...]]:
        """The requantization of each output position (by its n) and the pads used."""
        spatial = x.shape[2:]
        if self.window is None:
            counts = np.asarray(int(np.prod(spatial)))
            pads: tuple[int, ...] = ()
        else:
            pads, out_shape = self.window.resolve(spatial)
            explicit = self.window.pads or (0,) * (2 * len(spatial))
            counts = window_counts(
                self.window, spatial, pads, out_shape, self.include_pad, explicit
            )
        table = self.by_count
        if int(counts.max()) >= table.multiplier.size or np.any(table.multiplier[counts] == 0):
            raise DataError(
                f"node {self.node!r} averages windows of {sorted(set(counts.flat))} cells, but was "
                "prepared for the input size the model declares; feed inputs of that size"
            )
        rescale = Rescale(table.multiplier[counts], table.shift[counts])
        limits = np.iinfo(storage_type(self.dtype))
        store = Requantization(
            rescale, self.zero_point, int(limits.min), int(limits.max), self.dtype
        )
        return store, pads

    def _sums(self, x: np.ndarray, pads: tuple[int, ...]) -> np.ndarray:
        centered = x.astype(np.int64) - self.x_zero
        if self.window is None:
            return centered.sum(axis=tuple(range(2, x.ndim)), keepdims=True)
        _, out_shape = self.window.resolve(x.shape[2:])
        total = np.zeros((*x.shape[:2], *out_shape), dtype=np.int64)
        for _, cells in tap_views(padded(centered, pads, 0), self.window, out_shape):
            total += cells
        return total

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        store, pads = self._store(args[0])
        return (store.apply(self._sums(args[0], pads)),)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        x = args[0]
        store, pads = self._store(x)
        centered = x.astype(np.int64) - self.x_zero
        if self.window is None:
            acc = centered.reshape(*x.shape[:2], -1).sum(axis=-1)
            acc = acc.reshape(*x.shape[:2], *([1] * (x.ndim - 2)))
        else:
            _, out_shape = self.window.resolve(x.shape[2:])
            acc = np.empty((*x.shape[:2], *out_shape), dtype=np.int64)
            for position in itertools.product(*(range(size) for size in out_shape)):
                cells = _window_cells(centered, self.window, pads, position)
                target: Index = (slice(None), slice(None), *position)
                acc[target] = cells.sum(axis=-1)
        return (store.apply_reference(acc),)


def prepare_pool(node: NodeToPrepare) -> Step:
    x, out = node.activation(0), node.output(0)
    op_type = node.node.op_type
    attrs = dict(node.node.attrs)
    if op_type == "MaxPool":
        if len(node.node.outputs) > 1 and node.node.outputs[1]:
            raise node.refuse("MaxPool's Indices output")
        if out.params != x.params:
            raise node.refuse("MaxPool must keep its input's parameters")
        window = Window.from_attrs(
            attrs, node.attr("kernel_shape", ()), ceil_mode=bool(node.attr("ceil_mode", 0))
        )
        return MaxPoolStep(node.node.name, (x.name,), (out.name,), window)
    if op_type == "GlobalAveragePool":
        shape = node.input_shapes[0] if node.input_shapes else None
        spatial = shape[2:] if shape is not None else ()
        if shape is None or not all(isinstance(d, int) for d in spatial):
            raise node.refuse("GlobalAveragePool needs the input's spatial size in the model")
        counts = [int(np.prod([int(d) for d in spatial if isinstance(d, int)]))]
        pool_window = None
    else:
        kernel = tuple(node.attr("kernel_shape", ()))
        pool_window = Window.from_attrs(attrs, kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
        counts = list(range(1, int(np.prod(kernel)) + 1))
    if max(counts) * largest_offset(x.params) > 2**31 - 1:  # 16-bit inputs only (§E.13)
        raise node.refuse(f"a window sum of {max(counts)} cells may leave int32")
    x_scale = scalar_scale(x.params, "the input", node)
    out_scale = scalar_scale(out.params, "the output", node)
    # s_x / (s_y · n) in float32, in ONNX Runtime's order (QLinearGlobalAveragePool).
    reals = np.zeros(max(counts) + 1, dtype=np.float32)
    for n in counts:
        reals[n] = np.float32(x_scale) / (np.float32(out_scale) * np.float32(n))
    return AveragePoolStep(
        node=node.node.name,
        inputs=(x.name,),
        outputs=(out.name,),
        window=pool_window,
        include_pad=bool(node.attr("count_include_pad", 0)),
        x_zero=scalar_zero_point(x.params, "the input", node),
        by_count=Rescale.from_real(reals, axis=0),
        zero_point=scalar_zero_point(out.params, "the output", node),
        dtype=out.params.dtype,
    )
