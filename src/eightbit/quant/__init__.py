"""eightbit.quant: quantization parameters of tensors and how they are chosen.

``QuantParams`` says how one tensor is stored as integers, ``QuantConfig`` which scheme the
user chose, and the ``*_params`` functions derive parameters from ranges and weights. The
math is in docs/numerics.md §Q. numpy only: no graph, no model.
"""

from __future__ import annotations

from eightbit.quant.choose import (
    BIAS_LIMIT,
    MIN_SCALE,
    activation_params,
    bias_params,
    constant_params,
    fit_weight_to_bias,
    int16_params,
    weight_params,
)
from eightbit.quant.config import ACTIVATION_TYPES, SCHEMES, ActivationType, QuantConfig, Scheme
from eightbit.quant.params import QUANT_TYPES, QuantParams, QuantType
from eightbit.quant.targets import PROFILES, TARGETS, QuantTarget, TargetName
from eightbit.quant.values import dequantize_values, quantize_values

__all__ = [
    "ACTIVATION_TYPES",
    "BIAS_LIMIT",
    "MIN_SCALE",
    "PROFILES",
    "QUANT_TYPES",
    "SCHEMES",
    "TARGETS",
    "ActivationType",
    "QuantConfig",
    "QuantParams",
    "QuantTarget",
    "QuantType",
    "Scheme",
    "TargetName",
    "activation_params",
    "bias_params",
    "constant_params",
    "dequantize_values",
    "fit_weight_to_bias",
    "int16_params",
    "quantize_values",
    "weight_params",
]
