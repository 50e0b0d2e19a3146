"""eightbit.engine: the integer-only reference interpreter (docs/numerics.md).

The definition of what a device computes for a quantized model. ``prepare`` builds an
integer ``Program`` once from the QDQ model and its plan (multipliers, shifts, lookup
tables); ``execute`` runs it with int8/uint8 tensors, int32 accumulators and integer
requantization, float only at the boundary and in the nodes the plan keeps in float;
``run`` does both and can dump every integer tensor.
"""

from __future__ import annotations

from eightbit.engine.build import build_program
from eightbit.engine.execution import execute, prepare, require_integer_only, run
from eightbit.engine.program import FloatNode, Program, Step, TensorFormat

__all__ = [
    "FloatNode",
    "Program",
    "Step",
    "TensorFormat",
    "build_program",
    "execute",
    "prepare",
    "require_integer_only",
    "run",
]
