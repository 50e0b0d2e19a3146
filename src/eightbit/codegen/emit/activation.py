"""Clamps and 256-entry lookup tables (engine: ``kernels/activation.py``, §E.7).

A Relu or Clip that keeps its input's parameters clamps the stored integers. Every other
activation reads the table Prepare built: ``y = T[q − q_min]``, one byte per element.
"""

from __future__ import annotations

from eightbit.codegen.c import Code, linear, literal
from eightbit.codegen.emit.base import Argument, Context, Layer, tensor_line
from eightbit.engine import Step
from eightbit.engine.kernels.activation import ClampStep, LookupStep


def emit_lookup(step: Step, context: Context) -> Layer:
    assert isinstance(step, LookupStep)
    (x,), (y,) = step.inputs, step.outputs
    table = context.table("table", step.table.dtype.name, step.table, "T[q - q_min]")
    code = Code()
    with code.loops([("i", context.size(y))]) as (i,):
        code.line(f"y[{i}] = {table}[{linear([(f'x[{i}]', 1)], -step.offset)}];")
    comment = [
        f"Lookup '{step.node}': y = T[x - ({step.offset})], T tabulates the activation on "
        "every stored input",
        tensor_line("x", x, context),
        tensor_line("y", y, context),
    ]
    arguments = [Argument(x, "x", False), Argument(y, "y", True)]
    return context.layer(arguments, comment, code.text(), in_place=(0,))


def emit_clamp(step: Step, context: Context) -> Layer:
    assert isinstance(step, ClampStep)
    (x,), (y,) = step.inputs, step.outputs
    low, high = literal(step.low), literal(step.high)
    code = Code()
    with code.loops([("i", context.size(y))]) as (i,):
        code.line(f"const int32_t q = x[{i}];")
        code.line(f"y[{i}] = ({context.ctype(y)})(q < {low} ? {low} : (q > {high} ? {high} : q));")
    comment = [
        f"Clamp '{step.node}': y = clamp(x, {step.low}, {step.high}) on the stored integers",
        tensor_line("x", x, context),
        tensor_line("y", y, context),
    ]
    arguments = [Argument(x, "x", False), Argument(y, "y", True)]
    return context.layer(arguments, comment, code.text(), in_place=(0,))
