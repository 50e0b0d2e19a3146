"""eightbit.qdq: the QDQ format, as every reader and writer of a QDQ model sees it.

``nodes`` recognises QuantizeLinear/DequantizeLinear nodes, reads their parameters with one
type rule (docs/numerics.md §Q10.1) and finds Q -> DQ pairs; ``integer_moves`` writes pure
data moves on the stored integers and restores the standard placement (§Q11). The export,
the integer engine and the analysis all read the format through this package.
"""

from __future__ import annotations

from eightbit.qdq.integer_moves import INTEGER_MOVES, collapse, expand
from eightbit.qdq.nodes import (
    QDQ_OPS,
    WIDE_READ_TYPES,
    UnreadableParams,
    dequantizes_constant,
    is_dequantize,
    is_qdq,
    is_quantize,
    quantize_before,
    read_params,
    stored_type,
)

__all__ = [
    "INTEGER_MOVES",
    "QDQ_OPS",
    "WIDE_READ_TYPES",
    "UnreadableParams",
    "collapse",
    "dequantizes_constant",
    "expand",
    "is_dequantize",
    "is_qdq",
    "is_quantize",
    "quantize_before",
    "read_params",
    "stored_type",
]
