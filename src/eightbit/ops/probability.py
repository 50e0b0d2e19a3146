"""Which tensors hold probabilities in [0, 1] (docs/numerics.md §A.9, eq. A.11).

A tensor holds probabilities when a Sigmoid, HardSigmoid or Softmax makes it, or a softmax
written as elementary ops (``Exp(x) / ReduceSum(Exp(x))``, as jax2tf and tf2onnx write it),
through ops that only move or select values and Concats of probabilities. The per-slice
verdicts read it to leave out probability slices that never fire.
"""

from __future__ import annotations

from eightbit.graph.view import Graph, Node
from eightbit.ops.layout import LAYOUT_OP_TYPES

# Ops whose output is a probability in [0, 1].
PROBABILITY_OPS = frozenset({"Sigmoid", "Softmax", "HardSigmoid"})
# Ops that move, select or take the maximum of values: never out of [0, 1]. Pad is left
# out (its fill value may be anything).
_VALUE_KEEPING_OPS = frozenset(LAYOUT_OP_TYPES) - {"Pad"} | {
    "Gather",
    "Identity",
    "MaxPool",
    "GlobalMaxPool",
}
# What may carry a softmax's sum to its Div: moves and broadcasts.
_SUM_CARRIERS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Expand", "Identity", "Flatten"})


def is_probability(graph: Graph, tensor: str) -> bool:
    """Whether ``tensor`` holds probabilities (module docstring)."""
    node = graph.producer(tensor)
    for _ in range(len(graph.nodes) + 1):
        if node is None or node.domain not in ("", "ai.onnx"):
            return False
        if makes_probabilities(graph, node):
            return True
        if node.op_type == "Concat":
            return all(is_probability(graph, name) for name in node.inputs)
        if node.op_type not in _VALUE_KEEPING_OPS or not node.inputs:
            return False
        node = graph.producer(node.inputs[0])
    return False


def makes_probabilities(graph: Graph, node: Node) -> bool:
    """Whether ``node`` itself turns its input into probabilities: a Sigmoid, HardSigmoid
    or Softmax, or the Div of a written softmax."""
    if node.domain not in ("", "ai.onnx"):
        return False
    return node.op_type in PROBABILITY_OPS or _is_written_softmax(graph, node)


def _is_written_softmax(graph: Graph, node: Node) -> bool:
    """``Div(e, S)`` where ``e = Exp(.)`` and ``S`` is a ``ReduceSum`` of ``e``, moved or
    broadcast: normalized exponentials, each in [0, 1]."""
    if node.op_type != "Div" or len(node.inputs) != 2:
        return False
    numerator = graph.producer(node.inputs[0])
    if numerator is None or numerator.op_type != "Exp":
        return False
    total = graph.producer(node.inputs[1])
    while total is not None and total.op_type in _SUM_CARRIERS:
        total = graph.producer(total.inputs[0])
    return total is not None and total.op_type == "ReduceSum" and total.inputs[0] == node.inputs[0]
