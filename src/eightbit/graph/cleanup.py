"""Removing what does nothing at inference: Identity, inference Dropout, dead nodes and weights.

An Identity between a weight and a Conv hides the weight from quantization; an unused
initializer only costs file size. Both passes change a model in place.
"""

from __future__ import annotations

from onnx import GraphProto, ModelProto, NodeProto, numpy_helper

from eightbit.graph._proto import DEFAULT_DOMAINS, default_opset, node_reads, subgraphs


def remove_passthrough(model: ModelProto) -> int:
    """Remove Identity nodes and Dropout nodes that run in inference mode; return how many.

    Readers of a removed node's output read its input instead. When the output is a graph
    output, the producer of the input is made to write the graph output directly; when
    that is impossible (the input is itself a graph input, output or initializer) the
    node stays.
    """
    graph = model.graph
    graph_outputs = {value.name for value in graph.output}
    fixed_names = (
        graph_outputs
        | {value.name for value in graph.input}
        | {tensor.name for tensor in graph.initializer}
    )
    read = {name for node in graph.node for name in node_reads(node)} | graph_outputs
    opset = default_opset(model) or 1
    alias: dict[str, str] = {}  # tensor name -> name that now carries its value
    renamed_outputs: set[str] = set()
    removed: list[int] = []
    for index, node in enumerate(graph.node):
        if not _is_passthrough(node, model, read, opset):
            continue
        source, target = alias.get(node.input[0], node.input[0]), node.output[0]
        if target not in graph_outputs:
            alias[target] = source
        elif source in fixed_names or source in renamed_outputs:
            continue
        else:
            for name, carrier in alias.items():
                if carrier == source:
                    alias[name] = target
            alias[source] = target
            renamed_outputs.add(source)
        removed.append(index)
    for index in reversed(removed):
        del graph.node[index]
    if alias:
        _apply_aliases(graph, alias, renamed_outputs)
    return len(removed)


def _is_passthrough(node: NodeProto, model: ModelProto, read: set[str], opset: int) -> bool:
    if node.domain not in DEFAULT_DOMAINS or not node.input or not node.input[0]:
        return False
    if node.op_type == "Identity":
        return True
    if node.op_type != "Dropout":
        return False
    if len(node.output) > 1 and node.output[1] and node.output[1] in read:
        return False  # the mask is used
    if opset < 7:
        return any(a.name == "is_test" and a.i == 1 for a in node.attribute)
    if opset >= 12 and len(node.input) > 2 and node.input[2]:
        return _is_false_constant(model.graph, node.input[2])
    return True


def _is_false_constant(graph: GraphProto, name: str) -> bool:
    for tensor in graph.initializer:
        if tensor.name == name:
            return not bool(numpy_helper.to_array(tensor).any())
    return False


def _apply_aliases(graph: GraphProto, alias: dict[str, str], renamed_outputs: set[str]) -> None:
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in alias:
                node.input[position] = alias[name]
        for position, name in enumerate(node.output):
            if name in renamed_outputs:
                node.output[position] = alias[name]
        for sub in subgraphs(node):
            _alias_subgraph(sub, alias)


def _alias_subgraph(graph: GraphProto, alias: dict[str, str]) -> None:
    """Rename outer-scope names read inside a subgraph (its own names are unique, SSA)."""
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in alias:
                node.input[position] = alias[name]
        for sub in subgraphs(node):
            _alias_subgraph(sub, alias)
    for value in graph.output:
        if value.name in alias:
            value.name = alias[value.name]


def remove_dead(model: ModelProto) -> tuple[int, int]:
    """Drop nodes no graph output depends on, then unused initializers; return both counts."""
    graph = model.graph
    needed = {value.name for value in graph.output}
    dead: list[int] = []
    for index in range(len(graph.node) - 1, -1, -1):
        node = graph.node[index]
        if any(name in needed for name in node.output if name):
            needed.update(node_reads(node))
        else:
            dead.append(index)
    for index in dead:  # already in descending order
        del graph.node[index]
    unused = [i for i, tensor in enumerate(graph.initializer) if tensor.name not in needed]
    for index in reversed(unused):
        del graph.initializer[index]
    return len(dead), len(unused)


def drop_stale_value_info(graph: GraphProto) -> None:
    """Forget recorded types of tensors that no node computes any more."""
    computed = {name for node in graph.node for name in node.output}
    stale = [i for i, value in enumerate(graph.value_info) if value.name not in computed]
    for index in reversed(stale):
        del graph.value_info[index]
