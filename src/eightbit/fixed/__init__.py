"""eightbit.fixed: exact fixed-point numbers with MATLAB ``fi`` semantics (numpy only).

The math, and which function implements each equation, is in docs/numerics.md §1.
"""

from __future__ import annotations

from eightbit.fixed.array import FixedArray, FixedPointWarning, fi, quantize
from eightbit.fixed.format import FixedFormat, best_precision_fraction_length
from eightbit.fixed.growth import difference_format, negation_format, product_format, sum_format
from eightbit.fixed.modes import OVERFLOW_MODES, ROUNDING_MODES, Overflow, Rounding
from eightbit.fixed.requantize import (
    float32_scale_ratio,
    quantize_multiplier,
    requantize,
    requantize_int,
)

__all__ = [
    "OVERFLOW_MODES",
    "ROUNDING_MODES",
    "FixedArray",
    "FixedFormat",
    "FixedPointWarning",
    "Overflow",
    "Rounding",
    "best_precision_fraction_length",
    "difference_format",
    "fi",
    "float32_scale_ratio",
    "negation_format",
    "product_format",
    "quantize",
    "quantize_multiplier",
    "requantize",
    "requantize_int",
    "sum_format",
]
