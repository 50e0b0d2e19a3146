"""Concat on integers (§E.5): each input is copied when its parameters are the output's,
otherwise mapped through a 256-entry table,

    T_i[q − q_min] = Q_y(DQ_i(q))        (ONNX DequantizeLinear then QuantizeLinear, float32)

which is exactly what ONNX Runtime's QLinearConcat does (it builds the same table per input
with an identity transform), and what its float path DQ → Concat → Q computes. Docs:
numerics.md §Q7 says why the inputs keep their own scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eightbit.engine.kernels.activation import build_table
from eightbit.engine.operands import NodeToPrepare, scalar_scale, scalar_zero_point
from eightbit.engine.program import Step


@dataclass(frozen=True, eq=False)
class ConcatStep(Step):
    """``tables[i]`` is None where input i is copied as it is; else T_i, indexed by
    ``q − offsets[i]`` (the input type's q_min)."""

    axis: int
    zeros: tuple[int, ...]
    tables: tuple[np.ndarray | None, ...]
    offsets: tuple[int, ...]

    kind = "Concat"

    def _run(self, args: tuple[np.ndarray, ...], reference: bool) -> np.ndarray:
        parts = []
        for values, table, offset in zip(args, self.tables, self.offsets, strict=True):
            if table is None:
                parts.append(values)
            elif reference:
                mapped = np.empty(values.shape, dtype=table.dtype)
                for index, q in np.ndenumerate(values):
                    mapped[index] = table[int(q) - offset]
                parts.append(mapped)
            else:
                parts.append(table[values.astype(np.intp) - offset])
        return np.concatenate(parts, axis=self.axis)

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self._run(args, reference=False),)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self._run(args, reference=True),)


def prepare_concat(node: NodeToPrepare) -> ConcatStep:
    out = node.output(0)
    scalar_scale(out.params, "the output", node)
    scalar_zero_point(out.params, "the output", node)
    operands = [node.integer(port) for port in range(len(node.inputs))]
    tables: list[np.ndarray | None] = []
    for port, operand in enumerate(operands):
        if operand.params == out.params:
            tables.append(None)
            continue
        scalar_scale(operand.params, f"input {port}", node)
        tables.append(build_table(lambda real: real, operand.params, out.params))
    return ConcatStep(
        node=node.node.name,
        inputs=tuple(operand.name for operand in operands),
        outputs=(out.name,),
        axis=int(node.attr("axis", 0)),
        zeros=tuple(scalar_zero_point(o.params, "an input", node) for o in operands),
        tables=tuple(tables),
        offsets=tuple(int(o.params.qmin) for o in operands),
    )
