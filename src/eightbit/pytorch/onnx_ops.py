"""ONNX operators as torch functions: the converter's kernels (numerics §T.3).

Each entry of ``KERNELS`` takes the node's attributes and its inputs (tensors, None for an
absent optional input) and returns its output, or a tuple of outputs. Inputs that ONNX
reads as shapes, axes or sizes (Reshape's shape, Slice's starts, ...) are read as Python
integers when the kernel runs, so a shape computed by the graph (Shape -> Gather -> Concat,
as the dynamo exporter writes a dynamic batch) works as well as a constant one. The
windowed ops (Conv, pools, Resize) are in ``onnx_windows``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from onnx import helper

from eightbit.pytorch.onnx_windows import WINDOW_KERNELS

__all__ = ["KERNELS", "OPSET", "OUTPUTS", "STATISTICS", "Attributes", "Kernel", "ints"]

Attributes = dict[str, Any]
Kernel = Callable[..., Any]
# Keys the converter adds to a node's attributes: the model's opset, the node's output count.
OPSET, OUTPUTS = "__opset", "__outputs"
# Inputs of these ops that are running statistics: buffers, not weights to train.
STATISTICS = {"BatchNormalization": (3, 4)}


def ints(value: Any) -> list[int]:
    """A shape, axes or sizes input as Python integers."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _axes(attributes: Attributes, axes: Any) -> list[int] | None:
    """Axes from the input (newer opsets) or the attribute (older)."""
    if axes is not None:
        return ints(axes)
    return list(attributes["axes"]) if "axes" in attributes else None


def _gemm(a: Attributes, x: Any, w: Any, c: Any = None) -> Any:
    x = x.transpose(0, 1) if a.get("transA", 0) else x
    w = w.transpose(0, 1) if a.get("transB", 0) else w
    out = a.get("alpha", 1.0) * (x @ w)
    return out if c is None else out + a.get("beta", 1.0) * c


def _clip(a: Attributes, x: Any, low: Any = None, high: Any = None) -> Any:
    low = a.get("min") if low is None else low
    high = a.get("max") if high is None else high
    low = None if low is None else float(torch.as_tensor(low).detach())
    high = None if high is None else float(torch.as_tensor(high).detach())
    if low is not None and high is not None and low > high:
        return torch.full_like(x, high)  # ONNX: every value becomes max
    # One clamp by numbers, not a maximum then a minimum by tensors: its gradient is one
    # mask (fine-tuning's ReLU6 layers, §T.5).
    return torch.clamp(x, low, high)


def _div(a: Attributes, x: Any, y: Any) -> Any:
    if x.dtype.is_floating_point:
        return x / y
    return torch.div(x, y, rounding_mode="trunc")  # ONNX's integer Div truncates


def _batch_norm(a: Attributes, x: Any, scale: Any, bias: Any, mean: Any, var: Any) -> Any:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    epsilon = a.get("epsilon", 1e-5)
    inverse = scale.reshape(shape) / torch.sqrt(var.reshape(shape) + epsilon)
    return (x - mean.reshape(shape)) * inverse + bias.reshape(shape)


def _layer_norm(a: Attributes, x: Any, scale: Any, bias: Any = None) -> Any:
    axis = a.get("axis", -1) % x.dim()
    shape = tuple(x.shape[axis:])
    weight = scale.expand(shape) if scale.shape != shape else scale
    if bias is not None and bias.shape != shape:
        bias = bias.expand(shape)
    return F.layer_norm(x, shape, weight, bias, a.get("epsilon", 1e-5))


def _softmax(a: Attributes, x: Any) -> Any:
    if a[OPSET] >= 13:
        return torch.softmax(x, a.get("axis", -1))
    axis = a.get("axis", 1) % x.dim()  # before opset 13: softmax of the flattened tail
    flat = x.reshape(int(np.prod(x.shape[:axis])), -1)
    return torch.softmax(flat, 1).reshape(x.shape)


def _flatten(a: Attributes, x: Any) -> Any:
    axis = a.get("axis", 1) % (x.dim() + 1) if x.dim() else 0
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _reshape(a: Attributes, x: Any, shape: Any) -> Any:
    target = ints(shape)
    if not a.get("allowzero", 0):
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return x.reshape(target)


def _transpose(a: Attributes, x: Any) -> Any:
    return x.permute(a.get("perm", list(range(x.dim()))[::-1]))


def _squeeze(a: Attributes, x: Any, axes: Any = None) -> Any:
    chosen = _axes(a, axes)
    if chosen is None:
        return x.squeeze()
    for axis in sorted((axis % x.dim() for axis in chosen), reverse=True):
        x = x.squeeze(axis)
    return x


def _unsqueeze(a: Attributes, x: Any, axes: Any = None) -> Any:
    chosen = _axes(a, axes) or []
    rank = x.dim() + len(chosen)
    for axis in sorted(axis % rank for axis in chosen):
        x = x.unsqueeze(axis)
    return x


def _concat(a: Attributes, *xs: Any) -> Any:
    return torch.cat([x for x in xs if x is not None], a["axis"])


def _split(a: Attributes, x: Any, split: Any = None) -> Any:
    axis = a.get("axis", 0)
    sizes = ints(split) if split is not None else a.get("split")
    if sizes is None:
        count = int(a["num_outputs"] if "num_outputs" in a else a[OUTPUTS])
        size = -(-x.shape[axis] // count)  # the last part may be smaller (opset 18)
        sizes = [min(size, x.shape[axis] - i * size) for i in range(count)]
    return tuple(torch.split(x, list(sizes), axis))


def _slice(
    a: Attributes, x: Any, starts: Any = None, ends: Any = None, axes: Any = None, steps: Any = None
) -> Any:
    begin = ints(starts) if starts is not None else list(a["starts"])
    end = ints(ends) if ends is not None else list(a["ends"])
    chosen = _axes(a, axes) or list(range(len(begin)))
    stride = ints(steps) if steps is not None else [1] * len(begin)
    for axis, first, last, step in zip(chosen, begin, end, stride, strict=True):
        axis %= x.dim()
        indices = range(*slice(first, last, step).indices(x.shape[axis]))
        x = x.index_select(axis, torch.tensor(list(indices), dtype=torch.long))
    return x


def _pad(a: Attributes, x: Any, pads: Any = None, value: Any = None, axes: Any = None) -> Any:
    amounts = ints(pads) if pads is not None else list(a["pads"])
    chosen = ints(axes) if axes is not None else list(range(x.dim()))
    half = len(amounts) // 2
    per_axis = {axis % x.dim(): (amounts[i], amounts[i + half]) for i, axis in enumerate(chosen)}
    torch_pads: list[int] = []
    for axis in reversed(range(x.dim())):  # F.pad: the last axis first
        torch_pads += per_axis.get(axis, (0, 0))
    mode = a.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode == "constant":
        fill = a.get("value", 0.0) if value is None else float(value.reshape(-1)[0])
        return F.pad(x, torch_pads, "constant", fill)
    while torch_pads and not any(torch_pads[-2:]):  # reflect/edge pad trailing axes only
        torch_pads = torch_pads[:-2]
    return F.pad(x, torch_pads, {"reflect": "reflect", "edge": "replicate"}[mode])


def _reduce(op: Callable[..., Any]) -> Kernel:
    def kernel(a: Attributes, x: Any, axes: Any = None) -> Any:
        chosen = _axes(a, axes)
        keep = bool(a.get("keepdims", 1))
        if not chosen:
            if a.get("noop_with_empty_axes", 0):
                return x
            chosen = list(range(x.dim()))
        return op(x, dim=[axis % x.dim() for axis in chosen], keepdim=keep)

    return kernel


def _amax(x: Any, dim: list[int], keepdim: bool) -> Any:
    return torch.amax(x, dim=dim, keepdim=keepdim)


def _shape(a: Attributes, x: Any) -> Any:
    dims = list(x.shape)[a.get("start", 0) : a.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64)


def _gather(a: Attributes, x: Any, indices: Any) -> Any:
    axis = a.get("axis", 0) % x.dim()
    index = indices.long() % x.shape[axis]
    out = x.index_select(axis, index.reshape(-1))
    return out.reshape((*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]))  # () for a scalar


def _constant(a: Attributes) -> Any:
    if "value" in a:
        return torch.from_numpy(np.array(a["value"]))
    for name, kind in (("value_float", np.float32), ("value_int", np.int64)):
        if name in a:
            return torch.tensor(np.array(a[name], dtype=kind))
    for name, kind in (("value_floats", np.float32), ("value_ints", np.int64)):
        if name in a:
            return torch.tensor(np.array(a[name], dtype=kind))
    raise ValueError(f"Constant with attributes {sorted(a)}: only value(s) are supported")


def _cast(a: Attributes, x: Any) -> Any:
    kind = helper.tensor_dtype_to_np_dtype(a["to"])
    return x.to(torch.from_numpy(np.zeros(0, dtype=kind)).dtype)


def _expand(a: Attributes, x: Any, shape: Any) -> Any:
    target = ints(shape)
    rank = max(len(target), x.dim())
    target = [1] * (rank - len(target)) + target
    source = [1] * (rank - x.dim()) + list(x.shape)
    return x.reshape(source).expand([max(t, s) for t, s in zip(target, source, strict=True)])


def _constant_of_shape(a: Attributes, shape: Any) -> Any:
    value = a.get("value")
    fill = torch.from_numpy(np.array(value).reshape(-1)) if value is not None else torch.zeros(1)
    return fill.expand(ints(shape)).clone()


def _range(a: Attributes, start: Any, limit: Any, delta: Any) -> Any:
    # Scalars of one type (ONNX Range): anchor grids of detection heads, positions.
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _variadic(op: Callable[[Any, Any], Any]) -> Kernel:
    def kernel(a: Attributes, first: Any, *rest: Any) -> Any:
        for x in rest:
            first = op(first, x)
        return first

    return kernel


def _unary(op: Callable[[Any], Any]) -> Kernel:
    return lambda a, x: op(x)


KERNELS: dict[str, Kernel] = {
    "Add": lambda a, x, y: x + y,
    "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y,
    "Div": _div,
    "Pow": lambda a, x, y: torch.pow(x, y),
    "MatMul": lambda a, x, y: torch.matmul(x, y),
    "Gemm": _gemm,
    "Relu": _unary(torch.relu),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Erf": _unary(torch.erf),
    "Sqrt": _unary(torch.sqrt),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Reciprocal": _unary(torch.reciprocal),
    "Identity": _unary(lambda x: x),
    "Dropout": lambda a, x, *rest: x,  # inference: the identity
    "Clip": _clip,
    "LeakyRelu": lambda a, x: F.leaky_relu(x, a.get("alpha", 0.01)),
    "HardSigmoid": lambda a, x: torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "HardSwish": _unary(F.hardswish),
    "Gelu": lambda a, x: F.gelu(x, approximate=_text(a.get("approximate", "none"))),
    "Softmax": _softmax,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Pad": _pad,
    "ReduceMean": _reduce(torch.mean),
    "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(_amax),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "Shape": _shape,
    "Gather": _gather,
    "Constant": _constant,
    "Cast": _cast,
    "Expand": _expand,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    **WINDOW_KERNELS,
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
