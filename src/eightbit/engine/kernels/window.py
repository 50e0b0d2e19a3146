"""Sliding windows shared by convolutions and pools: padding, output shape, strided views.

Only index arithmetic lives here; the kernels decide what a window computes. The rules are
ONNX's (Conv, MaxPool, AveragePool): explicit ``pads`` as [begin..., end...] or ``auto_pad``
SAME_UPPER / SAME_LOWER / VALID, and for pools ``ceil_mode``, whose extra windows must start
inside the input or its begin padding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from eightbit.errors import ModelError


@dataclass(frozen=True)
class Window:
    """Geometry of a window over the spatial axes (everything after N and C)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...] | None  # [begin..., end...]; None with auto_pad
    auto_pad: str = "NOTSET"
    ceil_mode: bool = False

    @classmethod
    def from_attrs(
        cls, attrs: dict[str, object], kernel: Sequence[int], *, ceil_mode: bool = False
    ) -> Window:
        rank = len(kernel)
        auto_pad = attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        pads = attrs.get("pads")
        return cls(
            kernel=tuple(int(k) for k in kernel),
            strides=_ints(attrs.get("strides"), rank, 1),
            dilations=_ints(attrs.get("dilations"), rank, 1),
            pads=None if auto_pad not in ("NOTSET", "") else _ints(pads, 2 * rank, 0),
            auto_pad="NOTSET" if auto_pad == "" else auto_pad,
            ceil_mode=ceil_mode,
        )

    def resolve(self, spatial: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(pads [begin..., end...] as used, output spatial shape) for an input's spatial shape.

        The end pads returned include any extra cells the last ``ceil_mode`` window reads.
        """
        rank = len(self.kernel)
        if len(spatial) != rank:
            raise ModelError(f"a {rank}-D window cannot slide over {len(spatial)} spatial axes")
        begin, end, out = [], [], []
        for i, size in enumerate(spatial):
            extent = self.dilations[i] * (self.kernel[i] - 1) + 1
            stride = self.strides[i]
            if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                count = -(-size // stride)
                total = max(0, (count - 1) * stride + extent - size)
                low = total // 2 if self.auto_pad == "SAME_UPPER" else total - total // 2
                pad_begin, pad_end = low, total - low
            elif self.auto_pad == "VALID":
                pad_begin = pad_end = 0
            elif self.auto_pad == "NOTSET" and self.pads is not None:
                pad_begin, pad_end = self.pads[i], self.pads[i + rank]
            else:
                raise ModelError(f"auto_pad {self.auto_pad!r} is not an ONNX padding mode")
            span = size + pad_begin + pad_end - extent
            if span < 0:
                raise ModelError(
                    f"a window of extent {extent} does not fit an axis of {size} (+ padding)"
                )
            count = (math.ceil if self.ceil_mode else math.floor)(span / stride) + 1
            if self.ceil_mode and (count - 1) * stride >= size + pad_begin:
                count -= 1  # a window may not start in the end padding
            begin.append(pad_begin)
            end.append(max(pad_end, (count - 1) * stride + extent - size - pad_begin))
            out.append(count)
        return (*begin, *end), tuple(out)


def padded(x: np.ndarray, pads: Sequence[int], value: float | int) -> np.ndarray:
    """``x`` (N, C, spatial...) padded on the spatial axes with a constant."""
    rank = x.ndim - 2
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[i + rank]) for i in range(rank)]
    if not any(pads):
        return x
    return np.pad(x, widths, mode="constant", constant_values=value)


def tap_views(
    x: np.ndarray, window: Window, out_shape: Sequence[int]
) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """For each kernel tap, (tap index, view (N, C, out...) of the cells it reads).

    ``x`` is the padded input. Each view is a strided slice, so a kernel that loops over
    the taps reads the input once per tap in memory order (fast), instead of reducing
    over scattered window axes.
    """
    for tap in itertools.product(*(range(k) for k in window.kernel)):
        region = tuple(
            slice(
                tap[i] * window.dilations[i],
                tap[i] * window.dilations[i] + (out_shape[i] - 1) * window.strides[i] + 1,
                window.strides[i],
            )
            for i in range(len(window.kernel))
        )
        yield tap, x[(slice(None), slice(None), *region)]


def _ints(value: object, count: int, default: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * count
    values = tuple(int(v) for v in np.asarray(value).reshape(-1))
    if len(values) != count:
        raise ModelError(f"expected {count} values in a window attribute (got {list(values)})")
    return values
