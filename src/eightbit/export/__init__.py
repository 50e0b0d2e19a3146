"""eightbit.export: writers that turn a ``QuantPlan`` into a deployable model.

``to_qdq`` writes standard QuantizeLinear/DequantizeLinear ONNX that ONNX Runtime runs on
its int8 kernels (docs/numerics.md §Q10).
"""

from __future__ import annotations

from eightbit.export.qdq import QuantizedConstants, to_qdq

__all__ = ["QuantizedConstants", "to_qdq"]
