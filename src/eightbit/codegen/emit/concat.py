"""Concat (engine: ``kernels/concat.py``, §E.5): each input copied, or mapped through the
engine's 256-entry table ``T_i[q − q_min] = Q_y(DQ_i(q))``, one block per outer index."""

from __future__ import annotations

import numpy as np

from eightbit.codegen.c import Code, linear
from eightbit.codegen.emit.base import Argument, Context, Layer, tensor_line
from eightbit.engine import Step
from eightbit.engine.kernels.concat import ConcatStep


def emit_concat(step: Step, context: Context) -> Layer:
    assert isinstance(step, ConcatStep)
    (y,) = step.outputs
    out_shape = context.shape(y)
    axis = step.axis % len(out_shape)
    outer = int(np.prod(out_shape[:axis], dtype=np.int64))
    names = [f"x{i}" for i in range(len(step.inputs))]
    comment = [f"Concat '{step.node}' along axis {axis}", tensor_line("y", y, context)]
    code = Code()
    code.line(f"{context.ctype(y)} *out = y;")
    parts = zip(step.inputs, step.tables, step.offsets, strict=True)
    with code.loops([("o", outer)]) as (o,):
        for index, (tensor, table, offset) in enumerate(parts):
            inner = int(np.prod(context.shape(tensor)[axis:], dtype=np.int64))
            if table is None:
                with code.loops([("i", inner)]) as (i,):
                    code.line(f"*out++ = {names[index]}[{linear([(o, inner), (i, 1)])}];")
                comment.append(tensor_line(names[index], tensor, context, "copied"))
                continue
            name = context.table(f"table{index}", table.dtype.name, table, "T[q - q_min]")
            with code.loops([("i", inner)]) as (i,):
                source = f"{names[index]}[{linear([(o, inner), (i, 1)])}]"
                code.line(f"*out++ = {name}[{linear([(source, 1)], -offset)}];")
            action = f"zero point {step.zeros[index]}, mapped by T = Q_y(DQ_x(q))"
            comment.append(tensor_line(names[index], tensor, context, action))
    arguments = [Argument(t, n, False) for t, n in zip(step.inputs, names, strict=True)]
    return context.layer([*arguments, Argument(y, "y", True)], comment, code.text())
