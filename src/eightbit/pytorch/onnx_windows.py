"""The windowed ONNX operators as torch functions: Conv, pools, Resize, depth moves (§T.3).

ONNX writes padding per side (``pads = [x1_begin, x2_begin, ..., x1_end, x2_end]``) and torch
per axis, both sides alike; an uneven pad is applied with ``F.pad`` first (zeros for Conv and
AveragePool's sums, -inf for MaxPool), so every ONNX padding is read exactly. Resize is
written per axis from its coordinate transformation, gathering (nearest) or blending the
two neighbours (linear), which is what the ONNX reference does for those modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["WINDOW_KERNELS"]

Attributes = dict[str, Any]


def _spatial(a: Attributes, x: Any, kernel: list[int]) -> tuple[list[int], list[int], list[int]]:
    """strides, dilations and ONNX-ordered pads, ``auto_pad`` resolved against ``x``."""
    rank = len(kernel)
    strides = list(a.get("strides", [1] * rank))
    dilations = list(a.get("dilations", [1] * rank))
    pads = list(a.get("pads", [0] * (2 * rank)))
    mode = a.get("auto_pad", "NOTSET")
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * rank)
        for i in range(rank):
            size = x.shape[2 + i]
            span = (kernel[i] - 1) * dilations[i] + 1
            total = max((math.ceil(size / strides[i]) - 1) * strides[i] + span - size, 0)
            small, large = total // 2, total - total // 2
            pads[i], pads[i + rank] = (small, large) if mode == "SAME_UPPER" else (large, small)
    elif mode == "VALID":
        pads = [0] * (2 * rank)
    return strides, dilations, pads


def _padded(x: Any, pads: list[int], fill: float) -> Any:
    """``x`` with ONNX ``pads`` applied on its spatial axes."""
    rank = len(pads) // 2
    if not any(pads):
        return x
    torch_pads: list[int] = []
    for i in reversed(range(rank)):
        torch_pads += [pads[i], pads[i + rank]]
    return F.pad(x, torch_pads, "constant", fill)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _conv(a: Attributes, x: Any, w: Any, b: Any = None) -> Any:
    kernel = list(w.shape[2:])
    strides, dilations, pads = _spatial(a, x, kernel)
    return _CONV[len(kernel)](_padded(x, pads, 0.0), w, b, strides, 0, dilations, a.get("group", 1))


def _conv_transpose(a: Attributes, x: Any, w: Any, b: Any = None) -> Any:
    kernel = list(w.shape[2:])
    rank = len(kernel)
    if "output_shape" in a:
        raise ValueError("ConvTranspose with output_shape is not supported; give pads instead")
    strides = list(a.get("strides", [1] * rank))
    dilations = list(a.get("dilations", [1] * rank))
    pads = list(a.get("pads", [0] * (2 * rank)))
    extra = list(a.get("output_padding", [0] * rank))
    full = _CONV_T[rank](x, w, b, strides, 0, extra, a.get("group", 1), dilations)
    # Padding a transposed convolution crops its full output, side by side.
    index = [slice(None), slice(None)]
    for i in range(rank):
        index.append(slice(pads[i], full.shape[2 + i] - pads[i + rank]))
    return full[tuple(index)]


def _max_pool(a: Attributes, x: Any) -> Any:
    kernel = list(a["kernel_shape"])
    strides, dilations, pads = _spatial(a, x, kernel)
    return _MAX[len(kernel)](
        _padded(x, pads, -math.inf), kernel, strides, 0, dilations,
        ceil_mode=bool(a.get("ceil_mode", 0)),
    )  # fmt: skip


def _average_pool(a: Attributes, x: Any) -> Any:
    """Window sums over the padded input, divided by the count ONNX says: the padded
    positions count only with ``count_include_pad``."""
    kernel = list(a["kernel_shape"])
    strides, _, pads = _spatial(a, x, kernel)
    ceil = bool(a.get("ceil_mode", 0))

    def sums(values: Any) -> Any:
        if len(kernel) == 1:  # avg_pool1d has no divisor_override: a 1-row image
            row = F.avg_pool2d(values.unsqueeze(-2), [1, *kernel], [1, *strides], 0, ceil,
                               True, divisor_override=1)  # fmt: skip
            return row.squeeze(-2)
        pool = F.avg_pool2d if len(kernel) == 2 else F.avg_pool3d
        return pool(values, kernel, strides, 0, ceil, True, divisor_override=1)

    total = sums(_padded(x, pads, 0.0))
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype)
    counted = (
        _padded(ones, pads, 1.0) if a.get("count_include_pad", 0) else _padded(ones, pads, 0.0)
    )
    return total / sums(counted)


def _global(op: Callable[..., Any]) -> Callable[..., Any]:
    return lambda a, x: op(x, dim=list(range(2, x.dim())), keepdim=True)


def _depth_to_space(a: Attributes, x: Any) -> Any:
    size = a["blocksize"]
    n, c, h, w = x.shape
    if a.get("mode", "DCR") == "CRD":
        y = x.reshape(n, c // size**2, size, size, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        y = x.reshape(n, size, size, c // size**2, h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // size**2, h * size, w * size)


def _space_to_depth(a: Attributes, x: Any) -> Any:
    size = a["blocksize"]
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // size, size, w // size, size).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * size**2, h // size, w // size)


def _resize(a: Attributes, x: Any, roi: Any = None, scales: Any = None, sizes: Any = None) -> Any:
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise ValueError(f"Resize mode {mode!r}: only nearest and linear are supported")
    if a.get("axes") is not None or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ValueError("Resize with axes or keep_aspect_ratio_policy is not supported")
    shape = list(x.shape)
    if sizes is not None and sizes.numel():
        out = [int(v) for v in sizes.tolist()]
        factors = [o / i for o, i in zip(out, shape, strict=True)]
    else:
        factors = [float(v) for v in scales.tolist()]
        out = [math.floor(i * f) for i, f in zip(shape, factors, strict=True)]
    for axis in range(x.dim()):
        if out[axis] != shape[axis] or factors[axis] != 1.0:
            x = _resize_axis(a, x, axis, out[axis], factors[axis], mode)
    return x


def _resize_axis(a: Attributes, x: Any, axis: int, out: int, factor: float, mode: str) -> Any:
    size = x.shape[axis]
    source = _source_coordinates(a.get("coordinate_transformation_mode", "half_pixel"),
                                 np.arange(out, dtype=np.float64), size, out, factor)  # fmt: skip
    if mode == "nearest":
        index = np.clip(_nearest(a.get("nearest_mode", "round_prefer_floor"), source), 0, size - 1)
        return x.index_select(axis, torch.from_numpy(index.astype(np.int64)))
    source = np.clip(source, 0, size - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    shape = [1] * x.dim()
    shape[axis] = out
    weight = torch.from_numpy((source - low).reshape(shape)).to(x.dtype)
    below = x.index_select(axis, torch.from_numpy(low))
    above = x.index_select(axis, torch.from_numpy(high))
    return below + (above - below) * weight


def _source_coordinates(
    transform: str, target: np.ndarray, size: int, out: int, factor: float
) -> np.ndarray:
    if transform == "half_pixel":
        return (target + 0.5) / factor - 0.5
    if transform == "pytorch_half_pixel":
        return (target + 0.5) / factor - 0.5 if out > 1 else np.zeros_like(target)
    if transform == "align_corners":
        return target * (size - 1) / (out - 1) if out > 1 else np.zeros_like(target)
    if transform == "asymmetric":
        return target / factor
    if transform == "tf_half_pixel_for_nn":
        return (target + 0.5) / factor
    raise ValueError(f"Resize coordinate_transformation_mode {transform!r} is not supported")


def _nearest(rounding: str, source: np.ndarray) -> np.ndarray:
    if rounding == "round_prefer_floor":
        return np.ceil(source - 0.5)
    if rounding == "round_prefer_ceil":
        return np.floor(source + 0.5)
    if rounding == "floor":
        return np.floor(source)
    if rounding == "ceil":
        return np.ceil(source)
    raise ValueError(f"Resize nearest_mode {rounding!r} is not supported")


WINDOW_KERNELS: dict[str, Callable[..., Any]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global(torch.mean),
    "GlobalMaxPool": _global(torch.amax),
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth,
    "Resize": _resize,
}
