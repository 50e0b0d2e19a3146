"""Whether a graph is a transformer: the test of dynamic mode's automatic choice (§D.6).

A transformer shows attention (a Softmax read by a MatMul of two activations: the
attention weights times the values) or a layer normalization (``LayerNormalization``, or
its decomposed form: a ReduceMean whose input is also read by the Sub that centres it).
CNNs show neither, so they never take the automatic choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eightbit.graph import Graph


def transformer_evidence(graph: Graph) -> str | None:
    """What makes ``graph`` a transformer (one short phrase), or None when nothing does."""
    for node in graph.nodes:
        if node.op_type == "LayerNormalization":
            return f"LayerNormalization {node.name!r}"
        if node.op_type == "Softmax":
            for reader in graph.consumers(node.outputs[0]):
                activations = [name for name in reader.inputs if not graph.is_constant(name)]
                if reader.op_type == "MatMul" and len(activations) == 2:
                    return f"attention: Softmax {node.name!r} read by MatMul {reader.name!r}"
        if node.op_type == "ReduceMean" and _centres(graph, node.inputs[0], node.outputs[0]):
            return f"a decomposed layer normalization at ReduceMean {node.name!r}"
    return None


def _centres(graph: Graph, source: str, mean: str) -> bool:
    """Whether a Sub reads ``source`` minus its ``mean`` (x − E[x], LayerNorm's first step)."""
    return any(
        reader.op_type == "Sub" and list(reader.inputs) == [source, mean]
        for reader in graph.consumers(mean)
    )
