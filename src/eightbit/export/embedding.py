"""Embedding tables stored as int8 rows with one scale per row (docs/numerics.md §D.3).

The lookup gathers the int8 rows and their scales, then dequantizes the gathered rows only:
``Gather(q) -> Cast -> Mul(Gather(s))``. Dequantizing the whole table first
(``DequantizeLinear -> Gather``) would touch every row of a 30,522 x 384 table on every run.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import FreshNames
from eightbit.ops.embedding import TableLookup
from eightbit.quant import QuantParams, quantize_values


def table_nodes(
    table: TableLookup,
    values: np.ndarray,
    params: QuantParams,
    names: FreshNames,
    output: str,
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """The nodes and constants of an int8 lookup in ``table`` (per-row ``params``, axis 0)
    writing ``output``."""
    integers = quantize_values(values, params)
    rows = np.asarray(params.scale, np.float32).reshape(-1, 1)  # [rows, 1]: broadcasts
    stored, scales = names(f"{table.table}_quantized"), names(f"{table.table}_row_scale")
    base = table.node
    gathered, gathered_scale, widened = (
        names(f"{base}_{part}") for part in ("rows_q", "rows_scale", "rows_float")
    )
    nodes = [
        helper.make_node("Gather", [stored, table.indices], [gathered], name=base, axis=0),
        helper.make_node(
            "Gather", [scales, table.indices], [gathered_scale], name=names(f"{base}_scale"), axis=0
        ),
        helper.make_node(
            "Cast", [gathered], [widened], to=TensorProto.FLOAT, name=names(f"{base}_cast")
        ),
        helper.make_node(
            "Mul", [widened, gathered_scale], [output], name=names(f"{base}_dequantize")
        ),
    ]
    constants = [numpy_helper.from_array(integers, stored), numpy_helper.from_array(rows, scales)]
    return nodes, constants
