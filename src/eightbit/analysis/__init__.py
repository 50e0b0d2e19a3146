"""eightbit.analysis: what int8 cost, and where (docs/numerics.md).

- ``validate``: output metrics float vs int8 (agreement, accuracy, SQNR, cosine, max abs
  error, user metrics), per-layer analysis, memory and latency; ``check_thresholds`` for CI;
- ``layer_analysis``: accumulated and own SQNR of every quantized tensor, worst first,
  with what-if runs for the worst few;
- ``dynamic_ranges``: log2 histograms against each format's window, overflow and underflow;
- ``metrics``: the metric functions themselves, for arrays.

Each module implements one part: ``qdq`` reads the int8 model, ``models`` loads and checks
the pair, ``runner`` runs them over the data, ``outputs``/``layers``/``ranges``/``memory``/
``latency`` hold the accumulators and results, ``variants`` builds the what-if models.
"""

from eightbit.analysis.labels import load_labels
from eightbit.analysis.latency import Latency, measure_latency
from eightbit.analysis.layers import LayerAnalysis, TensorReport, WhatIf
from eightbit.analysis.memory import LayerMemory, MemoryUsage, memory_usage
from eightbit.analysis.models import ModelPair, load_pair
from eightbit.analysis.outputs import OutputMetrics
from eightbit.analysis.qdq import QdqModel, QuantizedActivation, QuantizedWeight, read_qdq
from eightbit.analysis.ranges import (
    DynamicRange,
    Log2Histogram,
    RangeCounter,
    Window,
    dynamic_range,
    log2_bins,
)
from eightbit.analysis.validate import (
    RunOptions,
    ValidationResult,
    check_thresholds,
    dynamic_ranges,
    layer_analysis,
    validate,
    validate_pair,
)

__all__ = [
    "DynamicRange",
    "Latency",
    "LayerAnalysis",
    "LayerMemory",
    "Log2Histogram",
    "MemoryUsage",
    "ModelPair",
    "OutputMetrics",
    "QdqModel",
    "QuantizedActivation",
    "QuantizedWeight",
    "RangeCounter",
    "RunOptions",
    "TensorReport",
    "ValidationResult",
    "WhatIf",
    "Window",
    "check_thresholds",
    "dynamic_range",
    "dynamic_ranges",
    "layer_analysis",
    "load_labels",
    "load_pair",
    "log2_bins",
    "measure_latency",
    "memory_usage",
    "read_qdq",
    "validate",
    "validate_pair",
]
