"""Constant folding: every tensor that does not depend on a runtime input becomes an initializer.

Constant nodes (how tf2onnx and PaddleOCR store weights) turn into initializers directly;
any other node that reads only constants is evaluated once with ``onnx.reference`` and its
outputs are stored. Quantization then finds every weight as an initializer, the only
place it looks. Folding changes a model in place; ``normalize`` works on its own copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

from eightbit.graph._proto import DEFAULT_DOMAINS, default_opset, subgraphs
from eightbit.graph.view import NONDETERMINISTIC_OPS

log = logging.getLogger("eightbit.graph")

# A folded tensor may be this much larger than the constants it is computed from; beyond
# that (ConstantOfShape, Expand, Tile of small constants) computing it at run time is
# cheaper than storing it.
_GROWTH_LIMIT = 2
_ALWAYS_FOLDED_BYTES = 64 * 1024

# Left to the Identity/Dropout pass, which removes them without copying the constant.
_PASSTHROUGH_OPS = frozenset({"Identity", "Dropout"})


@dataclass(frozen=True)
class FoldResult:
    constants_moved: int  # Constant nodes turned into initializers
    nodes_folded: int  # other nodes evaluated and replaced by their outputs
    kept: tuple[str, ...]  # names of constant-only nodes left in place, with the reason


def fold_constants(model: ModelProto) -> FoldResult:
    """Replace every foldable node of ``model``'s main graph by initializers (in place).

    The graph must be topologically sorted.
    """
    graph = model.graph
    opset = default_opset(model) or 1
    graph_outputs = {value.name for value in graph.output}
    constants: dict[str, TensorProto] = {tensor.name: tensor for tensor in graph.initializer}
    folded: list[int] = []
    moved = 0
    kept: list[str] = []
    for index, node in enumerate(graph.node):
        if not _reads_only_constants(node, constants) or any(
            name in graph_outputs for name in node.output
        ):
            continue
        stored = _constant_tensor(node) if node.op_type == "Constant" else None
        outcome = [stored] if stored is not None else _evaluate(node, constants, opset)
        if isinstance(outcome, str):
            kept.append(f"{node.name or node.op_type} ({outcome})")
            continue
        for tensor in outcome:
            graph.initializer.append(tensor)
            constants[tensor.name] = graph.initializer[-1]
        folded.append(index)
        moved += node.op_type == "Constant"
    for index in reversed(folded):
        del graph.node[index]
    for note in kept:
        log.info("kept constant node %s", note)
    return FoldResult(moved, len(folded) - moved, tuple(kept))


def _reads_only_constants(node: NodeProto, constants: dict[str, TensorProto]) -> bool:
    if node.domain not in DEFAULT_DOMAINS or node.op_type in NONDETERMINISTIC_OPS:
        return False
    if node.op_type in _PASSTHROUGH_OPS or any(True for _ in subgraphs(node)):
        return False
    return all(name in constants for name in node.input if name)


def _constant_tensor(node: NodeProto) -> TensorProto | None:
    """The tensor of ``Constant(value=...)`` renamed to the node's output; None for other forms."""
    for attr in node.attribute:
        if attr.name == "value" and len(node.attribute) == 1:
            tensor = TensorProto()
            tensor.CopyFrom(attr.t)
            tensor.name = node.output[0]
            return tensor
    return None


def _evaluate(
    node: NodeProto, constants: dict[str, TensorProto], opset: int
) -> list[TensorProto] | str:
    """The node's outputs computed by the ONNX reference implementation, or why not."""
    feeds = {name: numpy_helper.to_array(constants[name]) for name in node.input if name}
    try:
        values = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
    # The reference implementation raises whatever its numpy code raises; a node it cannot
    # evaluate is simply left for the runtime.
    except Exception as error:
        return f"onnx.reference cannot evaluate it: {type(error).__name__}"
    input_bytes = sum(array.nbytes for array in feeds.values())
    limit = max(_ALWAYS_FOLDED_BYTES, _GROWTH_LIMIT * input_bytes)
    results = []
    for name, value in zip(node.output, values, strict=False):
        if not name:
            continue
        if not isinstance(value, np.ndarray | np.generic):
            return "its output is not a tensor"
        array = np.asarray(value)
        if array.nbytes > limit:
            return f"its {array.nbytes} byte output is much larger than its inputs"
        results.append(numpy_helper.from_array(array, name))
    return results
