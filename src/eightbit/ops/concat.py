"""Concat: each input keeps its own parameters; the output has its own calibrated range.

ONNX Runtime's QLinearConcat requantizes every input to the output's scale; the reasons
for not forcing one shared scale are in docs/numerics.md §Q7.
"""

from __future__ import annotations

from eightbit.ops.spec import OpSpec

CONCAT = OpSpec("Concat", data_inputs=None, joins_along_axis=True)

SPECS = (CONCAT,)
