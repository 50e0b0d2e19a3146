"""A model cut down to some of its nodes: the piece of a network between tensors already
computed and the tensors wanted next (how the layer-wise reconstruction carries the
quantized network forward one layer at a time, docs/numerics.md §I.8)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from onnx import ModelProto, ValueInfoProto, helper

__all__ = ["has_subgraphs", "piece"]


def has_subgraphs(model: ModelProto) -> bool:
    """Whether a node holds a graph (If, Loop, Scan): its nodes read names that its inputs
    list does not show, so the model cannot be cut by its inputs lists."""
    return any(a.g.node or a.graphs for node in model.graph.node for a in node.attribute)


def piece(
    model: ModelProto,
    nodes: Sequence[int],
    inputs: Mapping[str, np.ndarray],
    outputs: Iterable[str],
) -> ModelProto:
    """A model of ``model``'s nodes at the indices ``nodes`` (in that order), reading the
    tensors ``inputs`` (an example value of each gives its type; the first axis, the
    batch, is left free) and the initializers the nodes read, and returning ``outputs``.

    The nodes keep their names and attributes, so ONNX Runtime fuses and runs them as it
    does in the whole model. The opsets, local functions and known types come along.
    """
    graph = model.graph
    kept = [graph.node[index] for index in nodes]
    read = {name for node in kept for name in node.input if name}
    written = {name for node in kept for name in node.output if name}
    result = ModelProto()
    result.ir_version = model.ir_version
    result.opset_import.extend(model.opset_import)
    result.functions.extend(model.functions)
    result.graph.name = graph.name
    result.graph.node.extend(kept)
    result.graph.input.extend(_typed_input(name, value) for name, value in inputs.items())
    result.graph.initializer.extend(t for t in graph.initializer if t.name in read)
    result.graph.value_info.extend(v for v in graph.value_info if v.name in written)
    result.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in outputs)
    return result


def _typed_input(name: str, value: np.ndarray) -> ValueInfoProto:
    shape: list[int | str] = ["batch", *value.shape[1:]] if value.ndim else []
    element = helper.np_dtype_to_tensor_dtype(value.dtype)
    return helper.make_tensor_value_info(name, element, shape)
