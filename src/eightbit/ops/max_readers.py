"""Tensors a global max reads: their range keeps the observed maximum (docs/numerics.md §Q15).

A percentile range (the default, §C.4) clips the top 0.01 % of a tensor's values: rare
outliers that cost one step each. A GlobalMaxPool or ReduceMax reads exactly those values:
every sample whose largest value lies above the clip reads the clip instead, and the
error is no longer rare. Magika's Conv output reaches 66 but its percentile range ends at
29; the pooled features then saturate, and the LayerNorm after the pool, which subtracts
their mean, turns that into a collapsed logit.

The tensors concerned are the max's input and those it is computed from by pointwise ops
and data movement (a bias Add, an activation, a GELU written as elementary ops, Squeeze,
Slice): walking up from the max, through producers that are not heavy, up to and
including the output of the first heavy op (Conv, Gemm, MatMul) or of anything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eightbit.ops.float_readers import HEAVY_OPS

if TYPE_CHECKING:
    from eightbit.graph import Graph

MAX_REDUCTIONS = frozenset({"GlobalMaxPool", "ReduceMax"})
# Ops the walk goes up through: they keep a large input large (pointwise or data movement).
_CARRIERS = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "Clip",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Erf",
        "Exp",
        "Gelu",
        "HardSigmoid",
        "HardSwish",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Slice",
        "Flatten",
        "Identity",
    }
)
_LIMIT = 64  # nodes visited per max: a bound, not a tuning (a GELU is ~10 nodes)


def max_read_tensors(graph: Graph) -> frozenset[str]:
    """Names of the tensors whose largest values a global max reduction reads."""
    found: set[str] = set()
    for node in graph.nodes:
        if node.op_type in MAX_REDUCTIONS and node.inputs:
            found.update(_walk_up(graph, node.inputs[0]))
    return frozenset(found)


def _walk_up(graph: Graph, start: str) -> set[str]:
    tensors: set[str] = set()
    pending = [start]
    visited = 0
    while pending and visited < _LIMIT:
        name = pending.pop()
        if not name or name in tensors or name in graph.initializers:
            continue
        tensors.add(name)
        visited += 1
        producer = graph.producer(name)
        if producer is None or producer.op_type in HEAVY_OPS:
            continue
        if producer.op_type in _CARRIERS:
            pending.extend(n for n in producer.inputs if n and n not in graph.initializers)
    return tensors
