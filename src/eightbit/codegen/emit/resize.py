"""Resize (engine: ``kernels/resize.py``, §E.9). Nearest is a move (``layout.py``); linear
mixes the 2^d corners of each output cell with the engine's integer weights and rounds once:

    y = round_half_even( Σ_corners Π_axes W · q / 2^(15·d) ),   W0 = 2^15 − W1

The engine interpolates one axis after another in int64; the sum is exact either way, so
the corners are added directly. Prepare's per-axis taps (``linear_taps``) become tables.
"""

from __future__ import annotations

import itertools

import numpy as np

from eightbit.codegen.c import Code, linear, smallest_type
from eightbit.codegen.emit.base import Argument, Context, Layer, strides_of, tensor_line
from eightbit.codegen.emit.layout import emit_layout
from eightbit.engine import Step
from eightbit.engine.kernels.resize import LINEAR_WEIGHT_BITS, ResizeStep, linear_taps
from eightbit.errors import ModelError

# Π W over 3 axes is below 2^45, times |q| <= 255: int64 holds it; a fourth axis would not.
_LARGEST_AXES = 3


def emit_resize(step: Step, context: Context) -> Layer:
    assert isinstance(step, ResizeStep)
    if not step.linear:
        return emit_layout(step, context)
    (x,), (y,) = step.inputs[:1], step.outputs
    x_shape = context.shape(x)
    extra = [context.interface.constant(name) if name else None for name in step.inputs[1:]]
    # The engine's geometry (output size and scale per axis) depends on shapes only.
    geometry = step._geometry(np.empty(x_shape, dtype=np.int8), (None, *extra))  # type: ignore[arg-type]
    resized = [
        axis for axis, (size, scale) in enumerate(geometry) if size != x_shape[axis] or scale != 1.0
    ]
    if not resized:
        return emit_layout(step, context)
    if len(resized) > _LARGEST_AXES:
        raise ModelError(
            f"Resize {step.node!r} interpolates {len(resized)} axes; generated C interpolates "
            f"at most {_LARGEST_AXES} (int64 products)"
        )
    out_shape = context.shape(y)
    x_strides = strides_of(x_shape)
    one = 1 << LINEAR_WEIGHT_BITS
    code = Code()
    code.line(f"{context.ctype(y)} *out = y;")
    names = [f"i{axis}" for axis in range(len(out_shape))]
    comment = [
        f"Resize '{step.node}' (linear, {step.attrs.get('ct')}): axes {resized} interpolated, "
        f"weights W1 in units of 2^-{LINEAR_WEIGHT_BITS}",
        tensor_line("x", x, context),
        tensor_line("y", y, context, "the input's parameters"),
    ]
    with code.loops(
        list(zip(names, out_shape, strict=True)), keep=[names[a] for a in resized]
    ) as counters:
        fixed = [(counters[a], x_strides[a]) for a in range(len(out_shape)) if a not in resized]
        code.line(f"const int32_t base = {linear(fixed)};")
        for axis in resized:
            size, scale = geometry[axis]
            low, high, weight = linear_taps(x_shape[axis], size, scale, step.attrs)
            i = counters[axis]
            low_t = context.table(
                f"low{axis}", smallest_type(low), low, f"axis {axis}: first input index"
            )
            high_t = context.table(
                f"high{axis}", smallest_type(high), high, f"axis {axis}: second input index"
            )
            w_t = context.table(f"weight{axis}", "int32", weight, f"axis {axis}: W1")
            stride = x_strides[axis]
            code.line(f"const int32_t lo{axis} = {linear([(f'{low_t}[{i}]', stride)])};")
            code.line(f"const int32_t hi{axis} = {linear([(f'{high_t}[{i}]', stride)])};")
            code.line(f"const int64_t w1_{axis} = {w_t}[{i}], w0_{axis} = {one} - w1_{axis};")
        code.line("int64_t acc = 0;")
        for corner in itertools.product((0, 1), repeat=len(resized)):
            weights = " * ".join(f"w{c}_{a}" for c, a in zip(corner, resized, strict=True))
            offset = " + ".join(
                f"{'hi' if c else 'lo'}{a}" for c, a in zip(corner, resized, strict=True)
            )
            code.line(f"acc += {weights} * x[base + {offset}];")
        bits = LINEAR_WEIGHT_BITS * len(resized)
        code.line(f"*out++ = ({context.ctype(y)})eb_round_shift(acc, {bits});")
    return context.layer([Argument(x, "x", False), Argument(y, "y", True)], comment, code.text())
