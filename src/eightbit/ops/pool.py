"""Pooling: MaxPool keeps its input's parameters; averages get their own (finer) range."""

from __future__ import annotations

from eightbit.ops.spec import OpSpec, OutputParams

MAX_POOL = OpSpec("MaxPool", output_params=OutputParams.SAME_AS_INPUT)
AVERAGE_POOL = OpSpec("AveragePool")
GLOBAL_AVERAGE_POOL = OpSpec("GlobalAveragePool")

SPECS = (MAX_POOL, AVERAGE_POOL, GLOBAL_AVERAGE_POOL)
