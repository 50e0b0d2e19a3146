"""Arithmetic whose every reader stays float: int8 would only round (docs/numerics.md §Q14).

A quantized node's output is rounded to its grid so that int8 readers can compute on it.
When every reader stays float (a ReduceSum, Sub, Sqrt or Exp without an int8 kernel, or a
float island), the rounding buys nothing: the readers dequantize it at once. It costs
accuracy where the readers cancel large values — a LayerNorm written as E[x²] − E[x]²
(jax2tf, Magika) rounds the square and both means to int8 before the subtraction, and the
variance comes out wrong by more than itself. Such a node stays float.

The rule runs to a fixed point, since the node's own producer may then feed only float
nodes too. It keeps what a caller sees: a model output stays as the plan had it.

Heavy ops (Conv, Gemm, MatMul) stay int8 whatever reads them: their int8 kernel is the
point of quantizing. Clamps stay with their producer (§Q5). Value-preserving ops (Reshape,
Transpose, ...) round nothing, so they are looked through: a node that feeds an int8 node
only through them still feeds int8.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from eightbit.ops.registry import lookup, op_types_where

# Ops whose int8 kernel is the point of quantizing (ops.joins reads this list too).
HEAVY_OPS = op_types_where(lambda spec: spec.is_layer)

if TYPE_CHECKING:
    from eightbit.graph import Graph, Node

FLOAT_READERS_REASON = (
    "every reader stays float: an int8 output would only round before they read it (§Q14)"
)


def keep_float_before_float(graph: Graph, reasons: dict[str, str | None]) -> None:
    """Mark quantized arithmetic nodes whose values reach no int8 node as float, in place;
    not when that would leave nothing quantized (the fallback's last steps exclude all but
    a few nodes on purpose, and its search must still find a model to build)."""
    before = dict(reasons)
    _apply(graph, reasons)
    if all(reason is not None for reason in reasons.values()):
        reasons.update(before)


def _apply(graph: Graph, reasons: dict[str, str | None]) -> None:
    outputs = {info.name for info in graph.outputs}
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            if reasons[node.name] is not None or not _rounds_only(node):
                continue
            if any(name in outputs for name in node.outputs):
                continue  # the caller reads it: keep the plan's interface as it was
            if not _feeds_int8(graph, node, reasons, {}):
                reasons[node.name] = FLOAT_READERS_REASON
                _release_passthrough(graph, node, reasons)
                changed = True


def _rounds_only(node: Node) -> bool:
    """An arithmetic node that the rule may return to float."""
    spec = lookup(node.op_type, node.domain)
    if spec is None or node.op_type in HEAVY_OPS:
        return False
    return not spec.same_as_input and spec.clamp is None


def _feeds_int8(
    graph: Graph, node: Node, reasons: Mapping[str, str | None], seen: dict[str, bool]
) -> bool:
    """Whether a quantized node reads ``node``'s output, through value-preserving ops."""
    if node.name in seen:
        return seen[node.name]
    graph_outputs = {info.name for info in graph.outputs}
    seen[node.name] = True  # a cycle cannot happen in a DAG; assume the safe answer
    result = False
    for output in node.outputs:
        for reader in graph.consumers(output):
            if reasons[reader.name] is not None:
                continue
            if not _passes_through(reader) or _feeds_int8(graph, reader, reasons, seen):
                result = True
            elif any(name in graph_outputs for name in reader.outputs):
                result = True  # an int8 model output stays as the plan had it
    seen[node.name] = result
    return result


def _passes_through(node: Node) -> bool:
    spec = lookup(node.op_type, node.domain)
    return spec is not None and spec.same_as_input and spec.clamp is None


def _release_passthrough(graph: Graph, node: Node, reasons: dict[str, str | None]) -> None:
    """Value-preserving readers that were int8 only because ``node`` was go float with it."""
    pending = [node]
    while pending:
        current = pending.pop()
        for output in current.outputs:
            for reader in graph.consumers(output):
                released = reasons[reader.name] is None and _passes_through(reader)
                if released and reader.inputs and reader.inputs[0] in current.outputs:
                    reasons[reader.name] = "its input and its readers are float (§Q14)"
                    pending.append(reader)
