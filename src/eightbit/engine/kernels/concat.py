"""Concat on integers (§E.5): each input is copied when its parameters are the output's,
otherwise requantized to them,

    y = clamp(z_y + rescale(q_i − z_i, s_i / s_y))

as ONNX Runtime's QLinearConcat does (docs/numerics.md §Q7 says why the inputs keep
their own scales).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eightbit.engine.kernels.requantize import Requantization
from eightbit.engine.operands import NodeToPrepare, scalar_scale, scalar_zero_point
from eightbit.engine.program import Step


@dataclass(frozen=True, eq=False)
class ConcatStep(Step):
    """``requantizations[i]`` is None where input i is copied as it is."""

    axis: int
    zeros: tuple[int, ...]
    requantizations: tuple[Requantization | None, ...]

    kind = "Concat"

    def _run(self, args: tuple[np.ndarray, ...], reference: bool) -> np.ndarray:
        parts = []
        for values, zero, rq in zip(args, self.zeros, self.requantizations, strict=True):
            if rq is None:
                parts.append(values)
                continue
            offset = values.astype(np.int64) - zero
            parts.append(rq.apply_reference(offset) if reference else rq.apply(offset))
        return np.concatenate(parts, axis=self.axis)

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self._run(args, reference=False),)

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self._run(args, reference=True),)


def prepare_concat(node: NodeToPrepare) -> ConcatStep:
    out = node.output(0)
    out_scale = scalar_scale(out.params, "the output", node)
    out_zero = scalar_zero_point(out.params, "the output", node)
    operands = [node.integer(port) for port in range(len(node.inputs))]
    requantizations: list[Requantization | None] = []
    for port, operand in enumerate(operands):
        same = operand.params == out.params
        if same:
            requantizations.append(None)
            continue
        real = np.float64(scalar_scale(operand.params, f"input {port}", node)) / out_scale
        requantizations.append(Requantization.from_real(real, out_zero, out.params.dtype))
    return ConcatStep(
        node=node.node.name,
        inputs=tuple(operand.name for operand in operands),
        outputs=(out.name,),
        axis=int(node.attr("axis", 0)),
        zeros=tuple(scalar_zero_point(o.params, "an input", node) for o in operands),
        requantizations=tuple(requantizations),
    )
