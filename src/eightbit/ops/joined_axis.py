"""Which Concat laid out an output's values along one axis, through the moves after it
(docs/numerics.md §A.9): a detector head joins box coordinates and scores along its
channel axis, then reshapes, joins its levels along another axis and transposes, so the
parts are no longer the inputs of the node that writes the output.
"""

from __future__ import annotations

from eightbit.graph.view import Graph, Node


def joining_concat(graph: Graph, tensor: str, axis: int) -> tuple[Node, int] | None:
    """The Concat whose inputs lie side by side along ``axis`` of ``tensor`` and that axis
    in its own output, followed back through Transposes (the axis permuted), Reshapes that
    keep every dimension up to the axis, and Concats along other axes (their first input:
    every input is laid out alike along the axis, or the sizes tell it apart); None when
    another op comes first or a shape is unknown."""
    for _ in range(len(graph.nodes) + 1):
        node = graph.producer(tensor)
        if node is None or node.domain not in ("", "ai.onnx") or not node.inputs:
            return None
        if node.op_type == "Concat":
            joined = _axis(node, tensor, graph)
            if joined == axis:
                return node, axis
            if joined is None or not _alike(graph, node.inputs, axis):
                return None
        elif node.op_type == "Transpose":
            perm = node.attrs.get("perm")
            if perm is None or axis >= len(perm):
                return None
            axis = int(perm[axis])
        elif node.op_type != "Reshape" or not _keeps_leading(graph, node, axis):
            return None
        tensor = node.inputs[0]
    return None


def _axis(node: Node, tensor: str, graph: Graph) -> int | None:
    info = graph.info(tensor)
    if info is None or info.shape is None:
        return None
    axis = int(node.attrs.get("axis", 0))
    return axis + len(info.shape) if axis < 0 else axis


def _alike(graph: Graph, inputs: list[str] | tuple[str, ...], axis: int) -> bool:
    sizes = {static_size(graph, name, axis) for name in inputs}
    return len(sizes) == 1 and None not in sizes


def _keeps_leading(graph: Graph, node: Node, axis: int) -> bool:
    """A Reshape whose input and output agree on every dimension up to ``axis``."""
    before, after = graph.info(node.inputs[0]), graph.info(node.outputs[0])
    if before is None or after is None or before.shape is None or after.shape is None:
        return False
    if axis >= min(len(before.shape), len(after.shape)):
        return False
    lead = [_static(v) for v in before.shape[: axis + 1]]
    return lead[axis] is not None and lead == [_static(v) for v in after.shape[: axis + 1]]


def static_size(graph: Graph, tensor: str, axis: int) -> int | None:
    """``tensor``'s size along ``axis`` where the normalized model knows it, else None."""
    info = graph.info(tensor)
    if info is None or info.shape is None or axis >= len(info.shape):
        return None
    return _static(info.shape[axis])


def _static(size: object) -> int | None:
    return size if isinstance(size, int) and size >= 0 else None
