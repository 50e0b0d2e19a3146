"""Integer kernels, one module per op family (the families of ``eightbit.ops``).

Each family module holds, for its ops, a naive reference kernel (plain int64 arithmetic:
the definition), a fast kernel that must equal it bit for bit, the ``Step`` that Prepare
builds (integer parameters only), and ``prepare_*`` turning a quantized node into that
step. ``PREPARE`` maps op types to those functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from eightbit.engine.kernels.activation import CURVES, prepare_activation
from eightbit.engine.kernels.concat import prepare_concat
from eightbit.engine.kernels.conv import prepare_conv
from eightbit.engine.kernels.elementwise import prepare_elementwise
from eightbit.engine.kernels.gemm import prepare_matmul
from eightbit.engine.kernels.layout import prepare_layout
from eightbit.engine.kernels.pool import prepare_pool
from eightbit.engine.kernels.resize import prepare_resize
from eightbit.engine.operands import NodeToPrepare
from eightbit.engine.program import Step
from eightbit.ops.layout import LAYOUT_OP_TYPES

Prepare = Callable[[NodeToPrepare], Step]

_FAMILIES: dict[Prepare, tuple[str, ...]] = {
    prepare_conv: ("Conv", "ConvTranspose"),
    prepare_matmul: ("Gemm", "MatMul"),
    prepare_elementwise: ("Add", "Mul"),
    prepare_concat: ("Concat",),
    prepare_pool: ("MaxPool", "AveragePool", "GlobalAveragePool"),
    prepare_activation: tuple(CURVES),
    prepare_resize: ("Resize",),
    prepare_layout: LAYOUT_OP_TYPES,
}

PREPARE: Mapping[str, Prepare] = MappingProxyType(
    {op_type: prepare for prepare, op_types in _FAMILIES.items() for op_type in op_types}
)

__all__ = ["PREPARE", "Prepare"]
