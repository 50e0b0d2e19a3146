"""eightbit.ops: one module per operator family, found through one registry.

Each family module declares ``SPECS``, the ``OpSpec`` of each op type it quantizes (ports,
weight channel axis, output parameters, fusions). ``lookup(op_type)`` finds a spec;
adding an op touches one file plus the list below.
"""

from __future__ import annotations

from eightbit.ops.registry import lookup, op_types_where, supported_op_types
from eightbit.ops.spec import Contraction, OpSpec, OutputParams, PerTensor, WeightLayout

__all__ = [
    "Contraction",
    "OpSpec",
    "OutputParams",
    "PerTensor",
    "WeightLayout",
    "lookup",
    "op_types_where",
    "supported_op_types",
]
