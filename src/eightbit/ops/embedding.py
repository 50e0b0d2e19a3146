"""Table lookups: ``Gather`` from a constant table (an embedding), and which matrix products
dynamic mode quantizes.

An embedding table is stored as int8 rows, each with its own scale (docs/numerics.md §D.3):
the lookup gathers the int8 rows and their scales and dequantizes the gathered rows only.
These facts are not in the registry of ``OpSpec``s: the static plan keeps ``Gather`` a float
node as before; the table rewrite (``export.embedding``) asks ``table_lookup``, and dynamic
mode's planner asks ``dynamic_weight``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eightbit.ops.registry import lookup
from eightbit.ops.spec import Contraction, attr, optional_input

if TYPE_CHECKING:
    from eightbit.graph import Graph, Node

# A product over fewer inputs than this stays float in dynamic mode: quantizing its input at
# run time would cost more than the product (the float side product of outlier channels).
MIN_INT8_DEPTH = 16
# A table smaller than this many rows is a handful of constants (a token-type table of 2
# rows), not worth a second Gather for its scales; it stays float.
MIN_TABLE_ROWS = 16


@dataclass(frozen=True)
class TableLookup:
    """A ``Gather`` of rows of a constant 2-D float table by integer indices."""

    node: str
    table: str  # the initializer [rows, width]
    indices: str


def table_lookup(node: Node, graph: Graph) -> TableLookup | None:
    """The lookup ``node`` makes in a constant table, or None when it is no such lookup:
    a ``Gather`` along axis 0 of a 2-D float initializer of at least ``MIN_TABLE_ROWS`` rows."""
    if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return None
    table, indices = node.inputs[0], node.inputs[1]
    if table not in graph.initializers or attr(node, "axis", 0) != 0:
        return None
    values = graph.initializers[table]
    if values.ndim != 2 or values.dtype.kind != "f" or values.shape[0] < MIN_TABLE_ROWS:
        return None
    return TableLookup(node.name, table, indices)


@dataclass(frozen=True)
class DynamicWeight:
    """A matrix product dynamic mode computes on int8: its data input, its constant weight
    as ``[K, N]`` (``transposed``: stored ``[N, K]``, Gemm's ``transB``) and its bias."""

    node: str
    data: str
    weight: str
    transposed: bool
    bias: str | None


def dynamic_products(graph: Graph, exclude: tuple[str, ...] = ()) -> list[DynamicWeight]:
    """Every int8 product of ``graph`` in dynamic mode (``dynamic_weight``), in node order,
    but the nodes named in ``exclude``."""
    found = (dynamic_weight(node, graph) for node in graph.nodes if node.name not in exclude)
    return [product for product in found if product is not None]


def dynamic_weight(node: Node, graph: Graph) -> DynamicWeight | None:
    """The int8 product of ``node`` in dynamic mode, or None when it stays float: a matrix
    layer (Gemm, MatMul) whose weight is a 2-D constant and whose checks pass."""
    spec = lookup(node.op_type, node.domain)
    if spec is None or spec.contraction is not Contraction.MATRIX or spec.weight_port is None:
        return None
    weight = optional_input(node, spec.weight_port)
    if weight is None or weight not in graph.initializers:
        return None
    if graph.initializers[weight].ndim != 2 or spec.reason_not_quantized(node, graph):
        return None
    bias = None if spec.bias_port is None else optional_input(node, spec.bias_port)
    layout = (
        spec.weight_layout(node.attrs, tuple(graph.initializers[weight].shape))
        if (spec.weight_layout is not None)
        else None
    )
    transposed = layout is not None and layout.out_axis == 0
    if graph.initializers[weight].shape[1 if transposed else 0] < MIN_INT8_DEPTH:
        return None
    return DynamicWeight(node.name, node.inputs[spec.data_ports(node)[0]], weight, transposed, bias)


def computes_on_int8_at_run_time(node: Node) -> bool:
    """Whether ``node`` is one of dynamic mode's run-time int8 ops (numerics §D): a model
    holding one is a dynamic-mode model, read without Q/DQ pairs."""
    return node.domain in ("", "ai.onnx") and node.op_type in (
        "DynamicQuantizeLinear",
        "MatMulInteger",
    )
