"""Layout ops move stored integers and keep their input's parameters (§E.8).

Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Split, Slice, Pad, SpaceToDepth and
DepthToSpace follow ONNX's definitions on the integer array. Their other inputs (shape,
axes, starts, pads ...) are read at run time, constants or not. Pad's constant is stored
quantized (0 is z exactly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np

from eightbit.engine.operands import NodeToPrepare, PlainInput
from eightbit.engine.program import Step
from eightbit.errors import DataError
from eightbit.quant import quantize_values

PadMode = Literal["constant", "reflect", "edge", "wrap"]
Aux = list[np.ndarray | None]


def _ints(value: np.ndarray | Sequence[int] | None) -> list[int] | None:
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _reshape(x: np.ndarray, aux: Aux, attrs: dict[str, Any]) -> np.ndarray:
    shape = _ints(aux[0]) or []
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _flatten(x: np.ndarray, aux: Aux, attrs: dict[str, Any]) -> np.ndarray:
    axis = int(attrs.get("axis", 1)) % (x.ndim + 1) if x.ndim else 0
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(outer, -1) if x.size or outer else x.reshape(0, 0)


def _transpose(x: np.ndarray, aux: Aux, attrs: dict[str, Any]) -> np.ndarray:
    perm = attrs.get("perm")
    return np.transpose(x, None if perm is None else [int(p) for p in perm])


def _axes(aux: Aux, attrs: dict[str, Any]) -> list[int] | None:
    given = aux[0] if aux and aux[0] is not None else attrs.get("axes")
    return _ints(given)


def _squeeze(x: np.ndarray, aux: Aux, attrs: dict[str, Any]) -> np.ndarray:
    axes = _axes(aux, attrs)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


def _unsqueeze(x: np.ndarray, aux: Aux, attrs: dict[str, Any]) -> np.ndarray:
    axes = _axes(aux, attrs) or []
    rank = x.ndim + len(axes)
    return np.expand_dims(x, axis=tuple(sorted(a % rank for a in axes)))


def _slice(x: np.ndarray, aux: Aux, attrs: dict[str, Any]) -> np.ndarray:
    if aux and aux[0] is not None:  # opset >= 10: starts, ends, axes, steps are inputs
        starts, ends = _ints(aux[0]) or [], _ints(aux[1]) or []
        axes = _ints(aux[2]) if len(aux) > 2 else None
        steps = _ints(aux[3]) if len(aux) > 3 else None
    else:
        starts, ends = _ints(attrs["starts"]) or [], _ints(attrs["ends"]) or []
        axes, steps = _ints(attrs.get("axes")), None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        size = x.shape[axis]
        start = start + size if start < 0 else start
        end = end + size if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), size), min(max(end, 0), size)
        else:
            start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return x[tuple(index)]


@dataclass(frozen=True, eq=False)
class LayoutStep(Step):
    """A value-moving op; ``inputs`` = (data, other inputs ... , "" where absent)."""

    op_type: str
    attrs: dict[str, Any] = field(default_factory=dict)
    pad_value: int = 0

    kind = "Layout"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        x = args[0]
        aux: list[np.ndarray | None] = [None if a is None else np.asarray(a) for a in args[1:]]
        if self.op_type == "Split":
            return tuple(_split(x, aux, self.attrs, len(self.outputs)))
        if self.op_type == "Pad":
            return (_pad(x, aux, self.attrs, self.pad_value),)
        return (_MOVES[self.op_type](x, aux, self.attrs),)


def _space_to_depth(x: np.ndarray, aux: Aux, attrs: dict[str, Any]) -> np.ndarray:
    """ONNX SpaceToDepth: y[n, (p·b + q)·C + c, i, j] = x[n, c, b·i + p, b·j + q]."""
    b = int(attrs["blocksize"])
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // b, b, w // b, b)
    return blocks.transpose(0, 3, 5, 1, 2, 4).reshape(n, c * b * b, h // b, w // b)


def _depth_to_space(x: np.ndarray, aux: Aux, attrs: dict[str, Any]) -> np.ndarray:
    """ONNX DepthToSpace, DCR (default) or CRD channel order."""
    b = int(attrs["blocksize"])
    n, c, h, w = x.shape
    if str(attrs.get("mode") or "DCR") == "CRD":
        blocks = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        blocks = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return blocks.reshape(n, c // (b * b), h * b, w * b)


_MOVES: dict[str, Callable[[np.ndarray, Aux, dict[str, Any]], np.ndarray]] = {
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "SpaceToDepth": _space_to_depth,
    "DepthToSpace": _depth_to_space,
}


def _split(x: np.ndarray, aux: Aux, attrs: dict[str, Any], outputs: int) -> list[np.ndarray]:
    axis = int(attrs.get("axis", 0)) % x.ndim
    sizes = _ints(aux[0]) if aux and aux[0] is not None else _ints(attrs.get("split"))
    if sizes is None:
        size = x.shape[axis]
        chunk = -(-size // outputs)
        sizes = [min(chunk, size - i * chunk) for i in range(outputs)]
    if sum(sizes) != x.shape[axis]:
        raise DataError(f"Split sizes {sizes} do not add up to axis {axis} of shape {x.shape}")
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(x, bounds, axis=axis))


def _pad(x: np.ndarray, aux: Aux, attrs: dict[str, Any], pad_value: int) -> np.ndarray:
    given = aux[0] if aux and aux[0] is not None else attrs.get("pads")
    pads = _ints(given) or [0] * (2 * x.ndim)
    axes = (_ints(aux[2]) if len(aux) > 2 else None) or list(range(x.ndim))
    rank = len(axes)
    widths = [(0, 0)] * x.ndim
    for i, axis in enumerate(axes):
        widths[axis % x.ndim] = (pads[i], pads[i + rank])
    # Negative pads crop; np.pad only grows.
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(widths))
    grown = [(max(b, 0), max(e, 0)) for b, e in widths]
    mode = cast(PadMode, str(attrs.get("mode", "constant")))
    cropped = x[crop]
    if mode == "constant":
        return np.pad(cropped, grown, mode="constant", constant_values=pad_value)
    return np.pad(cropped, grown, mode=mode)


def prepare_layout(node: NodeToPrepare) -> Step:
    x = node.activation(0)
    outs = node.outputs
    for out in outs:
        if out.params != x.params:
            raise node.refuse("a layout op must keep its input's parameters")
    aux = []
    for port in range(1, len(node.node.inputs)):
        operand = node.operand(port)
        if operand is not None and not isinstance(operand, PlainInput):
            raise node.refuse(f"input {port} must not be quantized")
        aux.append("" if operand is None else operand.name)
    attrs = {key: node.attr(key, None) for key in node.node.attrs}
    pad_value = 0
    if node.node.op_type == "Pad":
        mode = attrs.get("mode") or "constant"
        if mode not in ("constant", "reflect", "edge", "wrap"):
            raise node.refuse(f"Pad mode {mode!r}")
        attrs["mode"] = mode
        given = node.constant(2) if node.opset >= 11 else attrs.get("value")
        real = 0.0 if given is None else float(np.asarray(given).reshape(-1)[0])
        pad_value = int(quantize_values(real, x.params))
    return LayoutStep(
        node=node.node.name,
        inputs=(x.name, *aux),
        outputs=tuple(out.name for out in outs),
        op_type=node.node.op_type,
        attrs=attrs,
        pad_value=pad_value,
    )
