"""Layout ops: they move, select or pad values, so they keep their input's parameters and
ONNX Runtime runs them directly on int8 (docs/numerics.md §Q6). Only input 0 is data:
the other inputs are shapes, axes, indices or the pad value.
"""

from __future__ import annotations

from eightbit.ops.spec import OpSpec, OutputParams

_SAME = OutputParams.SAME_AS_INPUT

# Ops that only move integers: their output keeps their input's parameters.
LAYOUT_OP_TYPES = (
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Split",
    "Slice",
    "Pad",
    "SpaceToDepth",
    "DepthToSpace",
)

SPECS = tuple(OpSpec(op_type, output_params=_SAME) for op_type in LAYOUT_OP_TYPES)
