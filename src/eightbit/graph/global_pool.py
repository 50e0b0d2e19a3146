"""A mean over both spatial axes of an image tensor, written as ``GlobalAveragePool``.

PyTorch's dynamo exporter writes ``adaptive_avg_pool2d(x, 1)`` and ``x.mean((2, 3))`` as
``ReduceMean`` over axes 2 and 3 (numerics §T.1). On a rank-4 NCHW tensor that is exactly
what ``GlobalAveragePool`` computes (the mean of each channel's H×W plane, keeping two axes
of size 1); without ``keepdims`` the two axes go, which ``Flatten(axis=1)`` of the pooled
``[N, C, 1, 1]`` tensor does. eightbit quantizes GlobalAveragePool and keeps ReduceMean in
float, so the PyTorch front end applies this rewrite to what the exporter wrote; ``normalize``
does not, so ONNX models read from files are quantized as they are.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from eightbit.graph._proto import FreshNames, attribute_value, graph_names

__all__ = ["spatial_means_as_global_pools"]

_SPATIAL = {2, 3}


def spatial_means_as_global_pools(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with each spatial ReduceMean of a rank-4 tensor rewritten; its names."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    ranks = _ranks(work)
    constants = {tensor.name: tensor for tensor in work.graph.initializer}
    fresh = FreshNames(graph_names(work.graph))
    rewritten: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for node in work.graph.node:
        keep = _spatial_keepdims(node, ranks, constants)
        if keep is None:
            nodes.append(node)
            continue
        rewritten.append(node.name or node.output[0])
        pooled = node.output[0] if keep else fresh(f"{node.output[0]}_pooled")
        name = node.name or pooled
        nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=name))
        if not keep:
            nodes.append(
                helper.make_node(
                    "Flatten", [pooled], [node.output[0]], name=fresh(f"{name}_flatten"), axis=1
                )
            )
    del work.graph.node[:]
    work.graph.node.extend(nodes)
    return work, rewritten


def _spatial_keepdims(
    node: onnx.NodeProto, ranks: dict[str, int], constants: dict[str, onnx.TensorProto]
) -> bool | None:
    """``keepdims`` of a ReduceMean over axes 2 and 3 of a rank-4 tensor; None for any other."""
    if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx"):
        return None
    if ranks.get(node.input[0]) != 4:
        return None
    attributes = {a.name: attribute_value(a) for a in node.attribute}
    if attributes.get("noop_with_empty_axes", 0):
        return None
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in constants:
            return None
        axes = [int(a) for a in numpy_helper.to_array(constants[node.input[1]]).ravel()]
    else:
        axes = list(attributes.get("axes", []))
    if {axis % 4 for axis in axes} != _SPATIAL or len(axes) != 2:
        return None
    return bool(attributes.get("keepdims", 1))


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """The rank of every tensor whose shape inference knows it."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    ranks: dict[str, int] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor.HasField("shape"):
            ranks[value.name] = len(tensor.shape.dim)
    for initializer in graph.initializer:
        ranks[initializer.name] = len(initializer.dims)
    return ranks
