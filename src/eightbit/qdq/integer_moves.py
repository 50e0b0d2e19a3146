"""Layout ops that ONNX Runtime would run in float are written on the stored integers.

ONNX Runtime's QDQ optimizer removes the DequantizeLinear/QuantizeLinear pair around
Reshape, Transpose, MaxPool and the like, so they move int8 values. It does not do so for
SpaceToDepth, DepthToSpace and Pad: ``DQ → SpaceToDepth → Q`` would dequantize, move
floats and quantize again (docs/numerics.md §Q11, §Q12). A pure move with the same
parameters in and out commutes with quantization, so the export writes
``stored → SpaceToDepth → DQ`` instead (``collapse``), which ONNX Runtime runs on
uint8/int8 directly. An int16 tensor (§Q17) keeps the standard placement: ONNX Runtime
has no kernel for those moves on int16. ``expand`` restores the standard placement for
readers that expect it (the integer engine): the two forms are the same function, exactly.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit.graph import FreshNames, graph_names
from eightbit.ops import lookup, op_types_where
from eightbit.qdq.nodes import is_dequantize, is_quantize

# Pure moves ONNX Runtime does not run on integers when they sit between DQ and Q.
INTEGER_MOVES = op_types_where(lambda spec: spec.moved_on_stored_integers)


def collapse(graph: onnx.GraphProto, named: Collection[str] = ()) -> None:
    """``DQ(a) → move → Q → t`` becomes ``a → move → t`` (in place) where the Q and DQ share
    their parameters. A DQ nobody else reads is dropped unless its output is ``named`` (the
    plan's tensors: a quantized activation ``x`` stays readable as the DQ output ``x``)."""
    producers = {out: node for node in graph.node for out in node.output}
    readers = _readers(graph)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    dropped: set[int] = set()
    replaced: set[str] = set()
    for node in graph.node:
        if node.op_type not in INTEGER_MOVES:
            continue
        before = producers.get(node.input[0])
        after = readers.get(node.output[0], [])
        if before is None or not is_dequantize(before) or len(after) != 1:
            continue
        quantize = after[0]
        if not is_quantize(quantize) or not _same_params(before, quantize, constants):
            continue
        if not _eight_bit(quantize, constants):
            continue  # ONNX Runtime has no SpaceToDepth/DepthToSpace/Pad kernel on int16
        port = _fill_value_port(node)
        value = node.input[port] if port is not None and len(node.input) > port else ""
        if value and value not in constants:
            continue  # a value computed at run time cannot be stored quantized beforehand
        node.input[0] = before.input[0]
        node.output[0] = quantize.output[0]
        replaced.update(_set_pad_value(node, graph, quantize, constants, stored=True))
        dropped.add(id(quantize))
        if len(readers.get(before.output[0], [])) == 1 and before.output[0] not in named:
            dropped.add(id(before))
    if dropped:
        kept = [node for node in graph.node if id(node) not in dropped]
        graph.ClearField("node")
        graph.node.extend(kept)
        _drop_unread(graph, replaced)


def _drop_unread(graph: onnx.GraphProto, candidates: set[str]) -> None:
    """Remove the ``candidates`` initializers nothing reads (Pad values replaced)."""
    read = {name for node in graph.node for name in node.input}
    unread = [
        i for i, t in enumerate(graph.initializer) if t.name in candidates and t.name not in read
    ]
    for index in reversed(unread):
        del graph.initializer[index]


def expand(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every collapsed move back between a DQ and a Q."""
    readers = _readers(model.graph)
    names = {tensor.name for tensor in model.graph.initializer}
    if not any(
        node.op_type in INTEGER_MOVES and _dequantizes(readers.get(node.output[0], []), names)
        for node in model.graph.node
    ):
        return model
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    readers = _readers(graph)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    fresh = FreshNames(graph_names(graph))
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        after = readers.get(node.output[0], [])
        if node.op_type not in INTEGER_MOVES or not _dequantizes(after, constants):
            nodes.append(node)
            continue
        params = list(after[0].input[1:])
        floats_in, floats_out = fresh(f"{node.input[0]}_dequantized"), fresh(f"{node.name}_float")
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [node.input[0], *params],
                [floats_in],
                name=fresh(f"{node.name}_DequantizeLinear"),
            )
        )
        stored = node.output[0]
        node.input[0], node.output[0] = floats_in, floats_out
        _set_pad_value(node, graph, after[0], constants, stored=False)
        nodes.append(node)
        nodes.append(
            helper.make_node(
                "QuantizeLinear",
                [floats_out, *params],
                [stored],
                name=fresh(f"{node.name}_QuantizeLinear"),
            )
        )
    graph.ClearField("node")
    graph.node.extend(nodes)
    return result


def _set_pad_value(
    node: onnx.NodeProto,
    graph: onnx.GraphProto,
    quantizer: onnx.NodeProto,
    constants: dict[str, onnx.TensorProto],
    *,
    stored: bool,
) -> list[str]:
    """Give a constant Pad its value on the other side of the quantization (in place).

    ``stored``: float ``v`` (0 when absent) -> ``Q(v)`` in the quantizer's type; otherwise
    the stored value -> ``DQ`` of it. ``quantizer`` is the Q or DQ whose parameters apply.
    Returns the name of the value it replaced, if any.
    """
    fill_port = _fill_value_port(node)
    if fill_port is None or any(
        a.name == "mode" and a.s not in (b"", b"constant") for a in node.attribute
    ):
        return []
    scale = float(numpy_helper.to_array(constants[quantizer.input[1]]))
    zero = numpy_helper.to_array(constants[quantizer.input[2]])
    port = node.input[fill_port] if len(node.input) > fill_port else ""
    current = numpy_helper.to_array(constants[port]) if port else None
    if stored:
        value = np.float32(0.0 if current is None else current.reshape(-1)[0])
        info = np.iinfo(zero.dtype)
        new = np.clip(np.rint(value / np.float32(scale)) + int(zero), info.min, info.max)
        array = np.asarray(new, dtype=zero.dtype)
    else:
        # eightbit's collapse always writes the stored value; another writer's integer Pad
        # may leave it out, and then pads with the integer 0.
        level = (0 if current is None else int(current.reshape(-1)[0])) - int(zero)
        array = np.asarray(level * np.float32(scale), np.float32)
    name = FreshNames(graph_names(graph))(f"{node.name}_{'stored' if stored else 'float'}_value")
    graph.initializer.append(numpy_helper.from_array(array.reshape(()), name))
    constants[name] = graph.initializer[-1]
    while len(node.input) <= fill_port:
        node.input.append("")
    node.input[fill_port] = name
    return [port] if port else []


def _fill_value_port(node: onnx.NodeProto) -> int | None:
    """The input holding the value a padding writes (Pad's input 2), None for pure moves."""
    spec = lookup(node.op_type, node.domain)
    return None if spec is None else spec.fill_value_port


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            readers.setdefault(name, []).append(node)
    return readers


def _dequantizes(nodes: list[onnx.NodeProto], constants: Collection[str]) -> bool:
    """Whether ``nodes`` are all per-tensor DequantizeLinears with a constant scale and zero
    point (what a collapsed move feeds: the Q put back after the move writes the same type
    only when the zero point is there to say it, §Q10.1)."""
    return bool(nodes) and all(
        is_dequantize(node)
        and not any(a.name == "axis" for a in node.attribute)
        and len(node.input) == 3
        and all(name in constants for name in node.input[1:])
        for node in nodes
    )


def _eight_bit(quantize: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    """Whether ``quantize`` stores uint8 or int8: its zero point's type (``_same_params``
    passes only Qs with one; a zero point computed at run time is not taken for 8-bit)."""
    zero_point = constants.get(quantize.input[2])
    eight = (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)
    return zero_point is not None and zero_point.data_type in eight


def _same_params(
    dequantize: onnx.NodeProto,
    quantize: onnx.NodeProto,
    constants: dict[str, onnx.TensorProto],
) -> bool:
    """Per-tensor scale and zero point of equal values (and type) on both sides."""
    if any(a.name == "axis" for a in (*dequantize.attribute, *quantize.attribute)):
        return False
    if len(dequantize.input) != 3 or len(quantize.input) != 3:
        return False
    for left, right in zip(dequantize.input[1:], quantize.input[1:], strict=True):
        if left == right:
            continue
        if left not in constants or right not in constants:
            return False
        a, b = numpy_helper.to_array(constants[left]), numpy_helper.to_array(constants[right])
        if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
            return False
    return True
