"""Ops that move stored integers: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Split,
Slice, Pad and nearest Resize (engine: ``kernels/layout.py``, ``kernels/resize.py``, §E.8-9).

The engine's own step says where every output element comes from: run on the integers
0, 1, 2, ... in the input's shape (Pad's constant set to −1), it returns, for each output
element, the input offset it reads, or −1 where Pad writes its constant. No ONNX rule is
written twice. That map is then printed as the cheapest loop nest that reproduces it:

- the identity (Reshape, Flatten, Squeeze, Unsqueeze): no code, the output may share the
  input's bytes (``Layer.alias``), or one copy loop;
- ``base + Σ_k f_k(i_k)`` (Transpose, Slice, Split, Resize nearest, reflect/edge padding):
  one loop per axis, ``f_k`` a stride where it is linear, else a small offset table;
  constant padding writes the constant, then the box the input lands in;
- anything else: one offset per output element, from a table.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from eightbit.codegen.c import Code, literal, smallest_type
from eightbit.codegen.emit.base import Argument, Context, Layer, strides_of, tensor_line
from eightbit.codegen.emit.walk import Term, Walk, linear_stride, separable, walking
from eightbit.engine import Step
from eightbit.engine.kernels.layout import LayoutStep
from eightbit.engine.kernels.resize import ResizeStep
from eightbit.errors import ModelError

_PADDING = -1


def source_offsets(step: Step, context: Context) -> tuple[np.ndarray, ...]:
    """For each output of ``step``, the input offset of every element (−1: the constant)."""
    x_shape = context.shape(step.inputs[0])
    offsets = np.arange(int(np.prod(x_shape, dtype=np.int64)), dtype=np.int64).reshape(x_shape)
    extra = []
    for name in step.inputs[1:]:
        value = context.interface.constant(name) if name else None
        if name and value is None:
            raise ModelError(
                f"{step.kind} {step.node!r} reads {name!r} at run time; generated C needs it "
                "to be a constant of the model"
            )
        extra.append(value)
    traced = step
    if isinstance(step, LayoutStep) and step.op_type == "Pad":
        traced = dataclasses.replace(step, pad_value=_PADDING)
    return tuple(np.asarray(out) for out in traced.run(offsets, *extra))  # type: ignore[arg-type]


def emit_layout(step: Step, context: Context) -> Layer:
    assert isinstance(step, LayoutStep | ResizeStep)
    x = step.inputs[0]
    x_size = context.size(x)
    moved = source_offsets(step, context)
    names = ["y"] if len(step.outputs) == 1 else [f"y{i}" for i in range(len(step.outputs))]
    pad_value = step.pad_value if isinstance(step, LayoutStep) else 0
    op_type = step.op_type if isinstance(step, LayoutStep) else "Resize"
    comment = [f"{op_type} '{step.node}'{_attributes(step)}", tensor_line("x", x, context)]
    code = Code()
    identity = len(moved) == 1 and _is_identity(moved[0], x_size)
    for index, (offsets, name) in enumerate(zip(moved, names, strict=True)):
        tensor = step.outputs[index]
        if tuple(offsets.shape) != context.shape(tensor):
            raise ModelError(f"{op_type} {step.node!r}: traced shape differs from the engine's")
        how = _emit_move(code, offsets, name, pad_value, context, f"{name}_")
        comment.append(tensor_line(name, tensor, context, how))
    arguments = [Argument(x, "x", False)]
    arguments += [Argument(t, n, True) for t, n in zip(step.outputs, names, strict=True)]
    return context.layer(arguments, comment, code.text(), alias=identity)


def _attributes(step: Step) -> str:
    attrs = dict(step.attrs) if isinstance(step, LayoutStep | ResizeStep) else {}
    if isinstance(step, LayoutStep) and step.op_type == "Pad":
        attrs["constant"] = step.pad_value
    text = ", ".join(f"{k} {_short(v)}" for k, v in sorted(attrs.items()) if v is not None)
    return f" ({text})" if text else ""


def _short(value: object) -> str:
    if isinstance(value, list | tuple | np.ndarray):
        return "[" + ", ".join(str(v) for v in np.asarray(value).reshape(-1)) + "]"
    return str(value)


def _is_identity(offsets: np.ndarray, x_size: int) -> bool:
    return offsets.size == x_size and np.array_equal(offsets.reshape(-1), np.arange(x_size))


def _emit_move(
    code: Code, offsets: np.ndarray, y: str, pad_value: int, context: Context, prefix: str
) -> str:
    """Loops writing output ``y`` from ``x`` by ``offsets``; a description of the move."""
    size = offsets.size
    if _is_identity(offsets, size) and size:
        with code.loops([("i", size)]) as (i,):
            code.line(f"{y}[{i}] = x[{i}];")
        return "the same integers (a copy, or shared bytes)"
    valid = offsets >= 0
    box: tuple[slice, ...] = tuple(slice(0, n) for n in offsets.shape)
    if not valid.all() and valid.any():
        nonzero = np.nonzero(valid)
        box = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in nonzero)
    inner = offsets[box]
    outside = np.ones(offsets.shape, dtype=bool)
    outside[box] = False
    decomposed = separable(inner) if (inner >= 0).all() and not valid[outside].any() else None
    if decomposed is None:
        table = context.table(
            f"{prefix}source",
            smallest_type(offsets),
            offsets,
            "input offset per element, -1: constant",
        )
        with code.loops([("i", size)]) as (i,):
            code.line(f"const int32_t at = {table}[{i}];")
            code.line(f"{y}[{i}] = at < 0 ? {literal(pad_value)} : x[at];")
        return f"gathered through a table of {size} offsets"
    base, parts = decomposed
    if not valid.all():
        with code.loops([("i", size)]) as (i,):
            code.line(f"{y}[{i}] = {literal(pad_value)};")
    out_strides = strides_of(offsets.shape)
    y_base = sum(b.start * s for b, s in zip(box, out_strides, strict=True))
    x_terms: list[Term] = []
    for axis, part in enumerate(parts):
        stride = linear_stride(part)
        if stride is None:
            x_terms.append(
                context.table(
                    f"{prefix}axis{axis}",
                    smallest_type(part),
                    part,
                    f"input offset along axis {axis}",
                )
            )
        else:
            x_terms.append(stride)
    walk = Walk(
        tuple(inner.shape), (tuple(out_strides), tuple(x_terms)), (y_base, base)
    ).simplified()
    with walking(code, walk) as (iy, ix):
        code.line(f"{y}[{iy}] = x[{ix}];")
    padded = "" if valid.all() else f", the rest {pad_value}"
    return f"moved in {len(walk.counts)} loop(s){padded}"
