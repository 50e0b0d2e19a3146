"""eightbit.ops: one module per operator family, found through one registry.

Each family module declares ``SPECS``, the ``OpSpec`` of each op type it quantizes: ports,
weight channel axis, output parameters, fusions, and what the improvement steps and the QDQ
writer need (layer contraction and weight layout, clamp bounds, homogeneity, what ONNX
Runtime does with the op). ``lookup(op_type)`` finds a spec, ``op_types_where(fact)`` the op
types that state a fact. No module outside ``ops`` (but the graph rewrites, the engine's
kernels and the C emitters) names an op type. Adding an op family touches its
``ops/<family>.py``, ``registry._FAMILIES``, its engine kernel and its C emitter
(docs/design.md, "Adding an operator family").
"""

from __future__ import annotations

from eightbit.ops.registry import lookup, op_types_where, supported_op_types
from eightbit.ops.spec import (
    Contraction,
    OpSpec,
    OutputParams,
    PerTensor,
    Shift,
    WeightLayout,
    Window,
)

__all__ = [
    "Contraction",
    "OpSpec",
    "OutputParams",
    "PerTensor",
    "Shift",
    "WeightLayout",
    "Window",
    "lookup",
    "op_types_where",
    "supported_op_types",
]
