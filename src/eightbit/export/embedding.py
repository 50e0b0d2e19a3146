"""Embedding tables stored as int8 rows with one scale per row (docs/numerics.md §D.3), in
dynamic mode (``table_nodes``, for ``export.dynamic``) and in static mode (``int8_tables``,
on the written QDQ model).

The lookup gathers the int8 rows and their scales, then dequantizes the gathered rows only:
``Gather(q) -> Cast -> Mul(Gather(s))``. Dequantizing the whole table first
(``DequantizeLinear -> Gather``) would touch every row of a 30,522 x 384 table on every run.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import FreshNames, Graph, graph_names
from eightbit.ops.embedding import TableLookup, table_lookup
from eightbit.plan import NodeDecision, QuantPlan
from eightbit.quant import QuantParams, quantize_values, weight_params


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


TABLE_REASON = "int8 table: the gathered rows are dequantized in float (numerics §D.3)"


def int8_tables(model: onnx.ModelProto, plan: QuantPlan) -> tuple[onnx.ModelProto, QuantPlan]:
    """``model`` (a written QDQ model) with every float lookup in a constant table stored as
    int8 rows (§D.3), and ``plan`` with the new nodes and the tables' parameters.

    Static mode's planner keeps ``Gather`` float; this leaves it float too, reading int8
    rows. A lookup excluded by the configuration, or any when ``op_types`` restricts what is
    quantized, is left as it is. Returns ``model`` and ``plan`` themselves when there is no
    table to store.
    """
    config = plan.config
    graph = Graph(model)
    decisions = {d.name: d for d in plan.nodes}
    lookups = [
        found
        for node in graph.nodes
        if config.op_types is None
        and node.name not in config.exclude
        and node.name in decisions
        and not decisions[node.name].quantized
        and (found := table_lookup(node, graph)) is not None
    ]
    if not lookups:
        return model, plan
    result = onnx.ModelProto()
    result.CopyFrom(model)
    names = FreshNames(graph_names(result.graph))
    rewritten = {lookup.node: lookup for lookup in lookups}
    tensors = dict(plan.tensors)
    added: list[TensorProto] = []
    added_decisions: dict[str, list[NodeDecision]] = {}
    body: list[onnx.NodeProto] = []
    for proto in result.graph.node:
        lookup = rewritten.get(proto.name)
        if lookup is None:
            body.append(proto)
            continue
        values = graph.initializers[lookup.table]
        params = tensors[lookup.table] = weight_params(values, 0, config, name=lookup.table)
        nodes, constants = table_nodes(lookup, values, params, names, proto.output[0])
        body.extend(nodes)
        added.extend(constants)
        added_decisions[proto.name] = [
            NodeDecision(node.name, node.op_type, False, TABLE_REASON) for node in nodes
        ]
    read = {name for proto in body for name in proto.input}
    tables = {lookup.table for lookup in lookups}
    kept = [t for t in result.graph.initializer if t.name not in tables or t.name in read]
    result.graph.ClearField("node")
    result.graph.node.extend(body)
    result.graph.ClearField("initializer")
    result.graph.initializer.extend([*kept, *added])
    decided = [new for d in plan.nodes for new in added_decisions.get(d.name, [d])]
    return result, replace(plan, tensors=tensors, nodes=tuple(decided))
