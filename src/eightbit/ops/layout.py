"""Layout ops: they move, select or pad values, so they keep their input's parameters and
ONNX Runtime runs them directly on int8 (docs/numerics.md §Q6). Only input 0 is data:
the other inputs are shapes, axes, indices or the pad value.
"""

from __future__ import annotations

from eightbit.ops.spec import OpSpec, OutputParams, Shift

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

# ONNX Runtime's QDQ optimizer drops the DequantizeLinear/QuantizeLinear pair around the
# others; these it would run in float, so the QDQ writer moves their stored integers (§Q11).
_FLOAT_IN_ONNX_RUNTIME = ("SpaceToDepth", "DepthToSpace", "Pad")
# Pad's input 2: the value a constant-mode Pad writes, stored quantized when it moves integers.
_FILL_VALUE_PORT = {"Pad": 2}

SPECS = tuple(
    OpSpec(
        op_type,
        output_params=_SAME,
        moved_on_stored_integers=op_type in _FLOAT_IN_ONNX_RUNTIME,
        fill_value_port=_FILL_VALUE_PORT.get(op_type),
        # Moving values moves a shift with them; a Pad writes its own fill value (§Q16.1).
        shift=None if op_type in _FILL_VALUE_PORT else Shift.COMMUTES,
    )
    for op_type in LAYOUT_OP_TYPES
)
