"""Resize on integers (§E.9): nearest picks stored integers; linear mixes them with
integer weights and rounds once.

Coordinates follow ONNX Resize (coordinate_transformation_mode half_pixel,
pytorch_half_pixel, align_corners, asymmetric; nearest_mode round_prefer_floor,
round_prefer_ceil, floor, ceil). They are index arithmetic on shapes, done per axis.

Linear interpolation along an axis with fraction w ∈ [0, 1) uses integer weights
``W1 = round(w · 2^R)``, ``W0 = 2^R − W1`` (they add up to 2^R, so a constant stays exact
and the zero point cancels); after d resized axes the sum is in units of 2^(d·R) and is
rounded once, ties to even, as every requantization (§E.2):

    y = round_half_even(Σ Π_axes W · q / 2^(d·R))                    R = LINEAR_WEIGHT_BITS
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eightbit.engine.kernels.requantize import ENGINE_ROUNDING
from eightbit.engine.operands import NodeToPrepare, PlainInput
from eightbit.engine.program import Step
from eightbit.errors import DataError
from eightbit.fixed.scaling import round_shift_right

# 2^-16 per weight: a weight error moves the result by < 255 · 2^-16 LSB per axis, far below
# the one rounding; 255 · 2^(2·15) < 2^38 leaves int64 room for 3-D resizes too.
LINEAR_WEIGHT_BITS = 15
_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _original(x: np.ndarray, in_size: int, out_size: int, scale: float, mode: str) -> np.ndarray:
    """x_original of each output coordinate x (float64)."""
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(x)
    return x / scale  # asymmetric


def nearest_indices(in_size: int, out_size: int, scale: float, attrs: dict[str, Any]) -> np.ndarray:
    x = _original(np.arange(out_size, dtype=np.float64), in_size, out_size, scale, attrs["ct"])
    mode = attrs["nearest"]
    if mode == "floor":
        index = np.floor(x)
    elif mode == "ceil":
        index = np.ceil(x)
    elif mode == "round_prefer_ceil":
        index = np.floor(x + 0.5)
    else:  # round_prefer_floor
        index = np.ceil(x - 0.5)
    return np.clip(index, 0, in_size - 1).astype(np.intp)


def linear_taps(
    in_size: int, out_size: int, scale: float, attrs: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index0, index1, W1) per output coordinate; W0 = 2^R − W1."""
    x = _original(np.arange(out_size, dtype=np.float64), in_size, out_size, scale, attrs["ct"])
    x = np.clip(x, 0, in_size - 1)
    low = np.floor(x)
    weight = np.rint((x - low) * 2**LINEAR_WEIGHT_BITS).astype(np.int64)
    index0 = low.astype(np.intp)
    index1 = np.minimum(index0 + 1, in_size - 1)
    return index0, index1, weight


@dataclass(frozen=True, eq=False)
class ResizeStep(Step):
    """``inputs`` = (x, scales or "", sizes or "")."""

    linear: bool
    attrs: dict[str, Any] = field(default_factory=dict)

    kind = "Resize"

    def _geometry(self, x: np.ndarray, args: tuple[np.ndarray, ...]) -> list[tuple[int, float]]:
        """(output size, scale) per axis."""
        scales = args[1] if len(args) > 1 and args[1] is not None and args[1].size else None
        sizes = args[2] if len(args) > 2 and args[2] is not None and args[2].size else None
        if sizes is not None:
            out = [int(s) for s in sizes.reshape(-1)]
            return [(o, o / i) for o, i in zip(out, x.shape, strict=True)]
        if scales is None:
            raise DataError(f"Resize node {self.node!r} has neither scales nor sizes")
        factors = [float(s) for s in scales.reshape(-1)]
        return [(math.floor(i * f), f) for i, f in zip(x.shape, factors, strict=True)]

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        x = args[0]
        geometry = self._geometry(x, args)
        if not self.linear:
            out = x
            for axis, (size, scale) in enumerate(geometry):
                if size != x.shape[axis] or scale != 1.0:
                    indices = nearest_indices(x.shape[axis], size, scale, self.attrs)
                    out = np.take(out, indices, axis=axis)
            return (out,)
        acc = x.astype(np.int64)
        axes = 0
        for axis, (size, scale) in enumerate(geometry):
            if size == x.shape[axis] and scale == 1.0:
                continue
            index0, index1, weight = linear_taps(x.shape[axis], size, scale, self.attrs)
            shape = [1] * x.ndim
            shape[axis] = size
            w1 = weight.reshape(shape)
            acc = (
                np.take(acc, index0, axis=axis) * ((1 << LINEAR_WEIGHT_BITS) - w1)
                + np.take(acc, index1, axis=axis) * w1
            )
            axes += 1
        rounded = round_shift_right(acc, axes * LINEAR_WEIGHT_BITS, ENGINE_ROUNDING)
        return (rounded.astype(x.dtype),)


def prepare_resize(node: NodeToPrepare) -> Step:
    x, out = node.activation(0), node.output(0)
    if out.params != x.params:
        raise node.refuse("Resize must keep its input's parameters")
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise node.refuse(f"Resize mode {mode!r}")
    if node.opset < 11:
        attrs = {"ct": "asymmetric", "nearest": "floor"}
        aux_ports: tuple[int | None, int | None] = (1, None)
    else:
        attrs = {
            "ct": node.attr("coordinate_transformation_mode", "half_pixel"),
            "nearest": node.attr("nearest_mode", "round_prefer_floor"),
        }
        aux_ports = (2, 3)
    if attrs["ct"] not in _COORDINATE_MODES or attrs["nearest"] not in _NEAREST_MODES:
        raise node.refuse(f"Resize with {attrs['ct']} / {attrs['nearest']} coordinates")
    if node.attr("antialias", 0) or node.attr("axes", None) is not None:
        raise node.refuse("Resize with antialias or axes")
    names = []
    for port in aux_ports:
        operand = None if port is None else node.operand(port)
        if operand is not None and not isinstance(operand, PlainInput):
            raise node.refuse(f"input {port} must not be quantized")
        names.append("" if operand is None else operand.name)
    return ResizeStep(
        node=node.node.name,
        inputs=(x.name, *names),
        outputs=(out.name,),
        linear=mode == "linear",
        attrs=attrs,
    )
