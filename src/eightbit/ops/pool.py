"""Pooling: MaxPool keeps its input's parameters; averages get their own (finer) range."""

from __future__ import annotations

from eightbit.ops.spec import OpSpec, OutputParams, Shift

# MaxPool pads with −inf and a global average has no padding: both pass a shift on (§Q16.1).
MAX_POOL = OpSpec("MaxPool", output_params=OutputParams.SAME_AS_INPUT, shift=Shift.COMMUTES)
AVERAGE_POOL = OpSpec("AveragePool")
GLOBAL_AVERAGE_POOL = OpSpec("GlobalAveragePool", shift=Shift.COMMUTES)

SPECS = (MAX_POOL, AVERAGE_POOL, GLOBAL_AVERAGE_POOL)
