"""Concat (engine: ``kernels/concat.py``, §E.5): each input copied, or requantized to the
output's parameters, ``y = clamp(z_y + rescale(q_i − z_i))``, one block per outer index."""

from __future__ import annotations

import numpy as np

from eightbit.codegen.c import Code, linear
from eightbit.codegen.emit.base import Argument, Context, Layer, centered, store, tensor_line
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
    with code.loops([("o", outer)]) as (o,):
        for index, (tensor, rq) in enumerate(zip(step.inputs, step.requantizations, strict=True)):
            inner = int(np.prod(context.shape(tensor)[axis:], dtype=np.int64))
            if rq is None:
                with code.loops([("i", inner)]) as (i,):
                    code.line(f"*out++ = {names[index]}[{linear([(o, inner), (i, 1)])}];")
                comment.append(tensor_line(names[index], tensor, context, "copied"))
                continue
            stage = store(rq, context)
            with code.loops([("i", inner)]) as (i,):
                source = f"{names[index]}[{linear([(o, inner), (i, 1)])}]"
                offset = centered(source, step.zeros[index])
                code.line(f"*out++ = ({context.ctype(y)}){stage(offset)};")
            action = f"requantized from zero point {step.zeros[index]}; {stage.text}"
            comment.append(tensor_line(names[index], tensor, context, action))
    arguments = [Argument(t, n, False) for t, n in zip(step.inputs, names, strict=True)]
    return context.layer([*arguments, Argument(y, "y", True)], comment, code.text())
