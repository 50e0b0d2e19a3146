"""Add and Mul with numpy broadcasting (engine: ``kernels/elementwise.py``, §E.4).

    Add:  y  = table[q_a − q_min][q_b − q_min]          (65536 entries, when Prepare needs it)
      or  a' = rescale((q_a − z_a) · 2^20, M_a, t_a)    b' likewise
          y  = clamp(z_y + rescale(a' + b', M, t))
    Mul:  y  = clamp(z_y + rescale((q_a − z_a)(q_b − z_b), M, t))

The left shift is written as a multiplication: C leaves ``<<`` of a negative value
undefined, and ``(q − z) · 2^20`` is below 2^28 in magnitude.
"""

from __future__ import annotations

import numpy as np

from eightbit.codegen.c import Code
from eightbit.codegen.emit.base import (
    Argument,
    Context,
    Layer,
    centered,
    rescale_terms,
    store,
    tensor_line,
)
from eightbit.codegen.emit.walk import broadcast_walk, walking
from eightbit.engine import Step
from eightbit.engine.kernels.elementwise import (
    ADD_LEFT_SHIFT,
    AddStep,
    MulStep,
    operand_order,
)


def emit_elementwise(step: Step, context: Context) -> Layer:
    assert isinstance(step, AddStep | MulStep)
    a, b = step.inputs
    (y,) = step.outputs
    if isinstance(step, AddStep):
        table = step.table(operand_order(context.shape(a), context.shape(b)))
        if table is not None:
            return _emit_add_table(step, table, context)
    out = store(step.requantization, context)
    walk = broadcast_walk(context.shape(y), [context.shape(a), context.shape(b)])
    code = Code()
    with walking(code, walk) as (iy, ia, ib):
        code.line(f"const int32_t da = {centered(f'a[{ia}]', step.zeros[0])};")
        code.line(f"const int32_t db = {centered(f'b[{ib}]', step.zeros[1])};")
        if isinstance(step, MulStep):
            code.line(f"y[{iy}] = ({context.ctype(y)}){out('(int64_t)da * db')};")
            rule = "y = clamp(z_y + rescale((a - z_a) * (b - z_b)))"
            shares: list[str] = []
        else:
            terms = [rescale_terms(r, context, "0", "") for r in step.operand_rescales]
            shifted = 1 << ADD_LEFT_SHIFT
            wide = step.requantization.rescale.wide  # int16 operands: (E.13a)
            rescale = "eb_rescale_wide" if wide else "eb_rescale"
            for operand, (multiplier, shift) in zip("ab", terms, strict=True):
                code.line(
                    f"const int64_t s{operand} = {rescale}((int64_t)d{operand} * {shifted}, "
                    f"{multiplier}, {shift});"
                )
            code.line(f"y[{iy}] = ({context.ctype(y)}){out('sa + sb')};")
            rule = (
                f"a' = rescale((a - z_a) * 2^{ADD_LEFT_SHIFT}), b' likewise, "
                "y = clamp(z_y + rescale(a' + b'))"
            )
            shares = [
                f"operand shares: a M = {terms[0][0]}, t = {terms[0][1]}; "
                f"b M = {terms[1][0]}, t = {terms[1][1]}"
            ]
    comment = [
        f"{step.kind} '{step.node}': {rule}",
        tensor_line("a", a, context, f"zero point {step.zeros[0]}"),
        tensor_line("b", b, context, f"zero point {step.zeros[1]}"),
        tensor_line("y", y, context),
        *shares,
        out.text,
    ]
    arguments = [Argument(a, "a", False), Argument(b, "b", False), Argument(y, "y", True)]
    # y[i] is written after a[i] and b[i] are read: an operand of y's shape may be y.
    same = [i for i, t in enumerate((a, b)) if context.shape(t) == context.shape(y)]
    return context.layer(arguments, comment, code.text(), in_place=same)


def _emit_add_table(step: AddStep, table: np.ndarray, context: Context) -> Layer:
    """y = table[q_a - q_min][q_b - q_min]: ONNX Runtime's QLinearAdd for every pair (E.4)."""
    a, b = step.inputs
    (y,) = step.outputs
    low = int(np.iinfo(table.dtype).min)
    name = context.table(
        "sums", table.dtype.name, table.reshape(-1), "y for every (a, b): 256 * (a - min) + b - min"
    )
    walk = broadcast_walk(context.shape(y), [context.shape(a), context.shape(b)])
    code = Code()
    with walking(code, walk) as (iy, ia, ib):
        row = centered(f"a[{ia}]", low)
        column = centered(f"b[{ib}]", low)
        code.line(f"y[{iy}] = {name}[{row} * 256 + {column}];")
    comment = [
        f"Add '{step.node}': y = table[a][b], ONNX Runtime's QLinearAdd for all 65536 "
        "input pairs, computed when the model was prepared",
        tensor_line("a", a, context, f"zero point {step.zeros[0]}"),
        tensor_line("b", b, context, f"zero point {step.zeros[1]}"),
        tensor_line("y", y, context),
    ]
    arguments = [Argument(a, "a", False), Argument(b, "b", False), Argument(y, "y", True)]
    same = [i for i, t in enumerate((a, b)) if context.shape(t) == context.shape(y)]
    return context.layer(arguments, comment, code.text(), in_place=same)
