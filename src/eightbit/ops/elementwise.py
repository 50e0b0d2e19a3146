"""Element-wise arithmetic: Add and Mul (QLinearAdd / QLinearMul in ONNX Runtime).

Both operands are activations; a constant operand is stored quantized with the activation
type (docs/numerics.md §Q8). Add can absorb a following Relu (ResNet's residual Add).
"""

from __future__ import annotations

from eightbit.ops.spec import OpSpec, Shift

ADD = OpSpec("Add", data_inputs=(0, 1), absorbs_activation=True, shift=Shift.SUMS)
MUL = OpSpec("Mul", data_inputs=(0, 1))

SPECS = (ADD, MUL)
