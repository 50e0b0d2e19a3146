"""ConvTranspose on integers (§E.3): every input value times every tap, added where the
tap lands, then cropped as ONNX says.

``conv_transpose_accumulate_reference`` is the definition (a loop, int64);
``conv_transpose_accumulate`` forms all (tap, position) products with one exact matmul per
group and adds each tap's plane at its stride.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from eightbit.engine.kernels.gemm import exact_matmul, fits_int32
from eightbit.engine.kernels.requantize import Requantization
from eightbit.engine.kernels.weighted import add_bias, centered_weight
from eightbit.engine.program import Step
from eightbit.errors import ModelError

Index = tuple[Any, ...]


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
    w = centered_weight(weight, w_zero, 1)
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
        return centered_weight(self.weight, self.weight_zero, 1).astype(np.float32)

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
        return (self.requantization.apply(add_bias(acc, self.bias), bounded=bounded),)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        geometry = self._geometry(args[0])
        acc = conv_transpose_accumulate_reference(
            args[0], self.weight, self.x_zero, self.weight_zero, geometry, self.group
        )
        return (self.requantization.apply_reference(add_bias(acc, self.bias)),)
