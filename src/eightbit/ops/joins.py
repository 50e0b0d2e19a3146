"""Joins of very different ranges: kept float after the last heavy op (docs/numerics.md §Q13).

A Concat, Add or Sub joins its inputs onto one int8 grid, spanning the widest input. An
input JOIN_RATIO times narrower keeps fewer than 256 / JOIN_RATIO steps of it: a detector's
head that concatenates box coordinates (0-320) with class scores (0-1) sets every score
to 0. When no heavy op (Conv, ConvTranspose, Gemm, MatMul) reads the join's result, the
join and every node after it are cheap, so they stay float: each input is dequantized from
its own grid and nothing is squeezed. Before a heavy op the join stays int8, since the heavy
op needs one grid for its input anyway (the fallback can still return it to float).

A probability op (Sigmoid, Softmax, a written softmax) in the tail stays float too, with
the nodes after it (§Q13.1): its int8 grid spans [0, 1] in steps of 1/255, which rounds a
probability that never leaves ~0.001 to 0 or 1 step, while in float it is computed from its
input's grid (the logits), and the output leaves the model as float anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from eightbit.ops.float_readers import HEAVY_OPS
from eightbit.ops.node_selection import Calibrated, Constant, SameAs, Source
from eightbit.ops.probability import makes_probabilities

if TYPE_CHECKING:
    from eightbit.graph import Graph, Node

# An input this many times narrower than the widest keeps fewer than 256 / 16 = 16 steps
# (4 bits) on the joined grid: ~30 dB at best for a part that spans its range, and nothing
# for a slice of it that spans less (§Q13).
JOIN_RATIO = 16.0
JOIN_OPS = frozenset({"Concat", "Add", "Sub"})

# tensor -> its calibrated (min, max) clipped to a folded clamp, as make_plan reads it
RangeOf = Callable[[str, "tuple[float, float] | None"], "tuple[float, float]"]
ConstantRange = Callable[[str], "tuple[float, float]"]


def float_joins(
    graph: Graph,
    reasons: Mapping[str, str | None],
    sources: Mapping[str, Source],
    range_of: RangeOf,
    constant_range: ConstantRange,
) -> dict[str, str]:
    """Node -> why it stays float: every wide join and every probability op in the tail,
    and the nodes after each."""
    tail = tail_nodes(graph)
    forced: dict[str, str] = {}
    for node in graph.nodes:
        if node.op_type not in JOIN_OPS or reasons[node.name] is not None:
            continue
        if node.name not in tail or node.name in forced:
            continue
        widths = _input_widths(graph, node, sources, range_of, constant_range)
        if len(widths) < 2:
            continue
        narrow, wide = min(widths), max(widths)
        if narrow > 0 and wide / narrow > JOIN_RATIO:
            forced[node.name] = (
                f"joins inputs {narrow:.3g} and {wide:.3g} wide (ratio {wide / narrow:.0f} > "
                f"{JOIN_RATIO:g}): one int8 grid would squeeze the narrow one; after the last "
                "heavy op, so it stays float and each input keeps its own grid (§Q13)"
            )
            _force_after(graph, node, forced, "join")
    for node in graph.nodes:
        if node.name not in tail or node.name in forced or reasons[node.name] is not None:
            continue
        if makes_probabilities(graph, node):
            forced[node.name] = (
                "probabilities past the last heavy op: their int8 grid has steps of 1/255, "
                "in float they keep the precision of their input's grid (§Q13.1)"
            )
            _force_after(graph, node, forced, "probabilities")
    return forced


def _force_after(graph: Graph, node: Node, forced: dict[str, str], what: str) -> None:
    for after in _descendants(graph, node):
        forced.setdefault(
            after.name, f"after the float {what} {node.name!r}, past the last heavy op (§Q13)"
        )


def tail_nodes(graph: Graph) -> set[str]:
    """Nodes from which no heavy op can be reached (graph.nodes is topological); the last
    heavy ops themselves are among them."""
    reaches: dict[str, bool] = {}
    for node in reversed(graph.nodes):
        readers = [reader for output in node.outputs for reader in graph.consumers(output)]
        reaches[node.name] = any(r.op_type in HEAVY_OPS or reaches[r.name] for r in readers)
    return {name for name, heavy in reaches.items() if not heavy}


def _descendants(graph: Graph, node: Node) -> list[Node]:
    seen: dict[str, Node] = {}
    pending = [node]
    while pending:
        current = pending.pop()
        for output in current.outputs:
            for reader in graph.consumers(output):
                if reader.name not in seen:
                    seen[reader.name] = reader
                    pending.append(reader)
    return list(seen.values())


def _input_widths(
    graph: Graph,
    node: Node,
    sources: Mapping[str, Source],
    range_of: RangeOf,
    constant_range: ConstantRange,
) -> list[float]:
    """Width of the grid each non-constant input gets on its own (zero included, Q.1)."""
    widths = []
    for name in node.inputs:
        if not name or name in graph.initializers or name not in sources:
            continue
        low, high = _effective_range(name, sources, range_of, constant_range)
        widths.append(max(high, 0.0) - min(low, 0.0))
    return widths


def _effective_range(
    name: str,
    sources: Mapping[str, Source],
    range_of: RangeOf,
    constant_range: ConstantRange,
) -> tuple[float, float]:
    source = sources[name]
    seen = {name}
    while isinstance(source, SameAs) and source.tensor not in seen:
        seen.add(source.tensor)
        name = source.tensor
        source = sources[name]
    if isinstance(source, Calibrated):
        return range_of(source.tensor, source.bounds)
    assert isinstance(source, Constant), f"a SameAs cycle at {name!r}"
    return constant_range(name)
