"""Add and Mul with numpy broadcasting (engine: ``kernels/elementwise.py``, §E.4).

    Add:  a' = rescale((q_a − z_a) · 2^20, M_a, t_a)    b' likewise
          y  = clamp(z_y + rescale(a' + b', M, t))
    Mul:  y  = clamp(z_y + rescale((q_a − z_a)(q_b − z_b), M, t))

The left shift is written as a multiplication: C leaves ``<<`` of a negative value
undefined, and ``(q − z) · 2^20`` is below 2^28 in magnitude.
"""

from __future__ import annotations

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
from eightbit.engine.kernels.elementwise import ADD_LEFT_SHIFT, AddStep, MulStep


def emit_elementwise(step: Step, context: Context) -> Layer:
    assert isinstance(step, AddStep | MulStep)
    a, b = step.inputs
    (y,) = step.outputs
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
            for operand, (multiplier, shift) in zip("ab", terms, strict=True):
                code.line(
                    f"const int64_t s{operand} = eb_rescale((int64_t)d{operand} * {shifted}, "
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
