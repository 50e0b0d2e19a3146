"""Run onnx's C++ tools (checker, shape inference, opset converter) without the weights.

Those tools take a serialized model: a copy of every weight, and a hard failure past
protobuf's 2 GiB limit. They only need the weights' types and shapes, so they run on a
*skeleton*: the model with every large initializer replaced by a graph input of the same
type and shape. Small initializers stay, because shape inference reads shape tensors.
The tool's result is then merged back into the full model in place, weights untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnx import ModelProto, helper

from eightbit.graph._proto import clear_except, copy_except, tensor_byte_size

# Shape tensors (Reshape targets, Slice bounds) are far below this size.
PAYLOAD_MIN_BYTES = 4096


@dataclass(frozen=True)
class Skeleton:
    model: ModelProto
    detached: frozenset[str]  # initializers left out of the skeleton
    stand_ins: frozenset[str]  # graph inputs added in their place


def skeleton_of(model: ModelProto) -> Skeleton:
    """A copy of ``model`` without its large initializers (the original is not changed)."""
    skeleton = ModelProto()
    copy_except(model, skeleton, skipped="graph")
    copy_except(model.graph, skeleton.graph, skipped="initializer")
    input_names = {value.name for value in model.graph.input}
    detached: set[str] = set()
    stand_ins: set[str] = set()
    for tensor in model.graph.initializer:
        if tensor_byte_size(tensor) < PAYLOAD_MIN_BYTES:
            skeleton.graph.initializer.append(tensor)
            continue
        detached.add(tensor.name)
        if tensor.name not in input_names:
            stand_ins.add(tensor.name)
            skeleton.graph.input.append(
                helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    return Skeleton(skeleton, frozenset(detached), frozenset(stand_ins))


def merge_skeleton(model: ModelProto, result: ModelProto, skeleton: Skeleton) -> None:
    """Replace everything in ``model`` but its detached initializers by ``result``'s content."""
    clear_except(model, kept="graph")
    copy_except(result, model, skipped="graph")
    graph = model.graph
    # The small initializers travelled through the tool; its copies replace ours.
    for position in range(len(graph.initializer) - 1, -1, -1):
        if graph.initializer[position].name not in skeleton.detached:
            del graph.initializer[position]
    clear_except(graph, kept="initializer")
    copy_except(result.graph, graph, skipped="initializer")
    graph.initializer.extend(result.graph.initializer)
    for position in range(len(graph.input) - 1, -1, -1):
        if graph.input[position].name in skeleton.stand_ins:
            del graph.input[position]


def apply_to_skeleton(model: ModelProto, tool: Callable[[ModelProto], ModelProto]) -> None:
    """Run ``tool`` (skeleton in, new model out) and merge its result into ``model``."""
    skeleton = skeleton_of(model)
    merge_skeleton(model, tool(skeleton.model), skeleton)
