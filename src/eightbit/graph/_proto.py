"""Small facts about ONNX protos that every module of this package needs.

Element types as numpy dtypes, attribute values as Python values, the default-domain opset,
names that subgraphs read from the enclosing graph, topological order and fresh names.
Nothing here changes a model except ``rename_uses``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import onnx
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
    helper,
    numpy_helper,
)

from eightbit.errors import ModelError

DEFAULT_DOMAINS = ("", "ai.onnx")
_PACKED_TYPES = frozenset(
    getattr(TensorProto, name)
    for name in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
    if hasattr(TensorProto, name)
)

FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
)

Shape = tuple[int | str | None, ...]


def np_dtype(elem_type: int) -> np.dtype | None:
    """numpy dtype of an ONNX element type; None when the type is undefined or unknown."""
    if elem_type == TensorProto.UNDEFINED:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError):
        return None


def tensor_type_of(value: onnx.ValueInfoProto) -> tuple[int, Shape | None] | None:
    """(element type, shape) of a tensor-typed value; None for sequences, maps or no type.

    A shape entry is the dim value, the symbolic dim name, or None for an unknown dim;
    the shape itself is None when not even the rank is known.
    """
    if not value.type.HasField("tensor_type"):
        return None
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type == TensorProto.UNDEFINED:
        return None
    if not tensor_type.HasField("shape"):
        return tensor_type.elem_type, None
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tensor_type.elem_type, tuple(dims)


def attribute_value(attr: AttributeProto) -> Any:
    """An attribute as a Python value: int, float, str, lists of those, np.ndarray for tensors.

    Graphs, sparse tensors and type protos stay protos: there is no better Python form.
    """
    kind = attr.type
    if kind == AttributeProto.INT:
        return int(attr.i)
    if kind == AttributeProto.FLOAT:
        return float(attr.f)
    if kind == AttributeProto.STRING:
        return _decode(attr.s)
    if kind == AttributeProto.INTS:
        return [int(v) for v in attr.ints]
    if kind == AttributeProto.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == AttributeProto.STRINGS:
        return [_decode(v) for v in attr.strings]
    if kind == AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if kind == AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in attr.tensors]
    return helper.get_attribute_value(attr)


def _decode(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def default_opset(model: ModelProto) -> int | None:
    """Version of the default ONNX domain the model imports (None when it imports none)."""
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    return None


def subgraphs(node: NodeProto) -> Iterator[GraphProto]:
    """The graphs held in a node's attributes (If branches, Loop and Scan bodies)."""
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == AttributeProto.GRAPHS:
            yield from attr.graphs


def outer_references(node: NodeProto) -> set[str]:
    """Names a node's subgraphs read from enclosing scopes (its implicit inputs)."""
    found: set[str] = set()
    for graph in subgraphs(node):
        found |= _free_names(graph)
    return found


def _free_names(graph: GraphProto) -> set[str]:
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(name for name in node.input if name)
        used |= outer_references(node)
        defined.update(node.output)
    used.update(v.name for v in graph.output)
    return used - defined


def node_reads(node: NodeProto) -> list[str]:
    """Every tensor a node reads: explicit inputs, then names its subgraphs take from outside."""
    reads = [name for name in node.input if name]
    if any(True for _ in subgraphs(node)):
        reads.extend(sorted(outer_references(node) - set(reads)))
    return reads


def topological_order(graph: GraphProto) -> list[NodeProto]:
    """Nodes so that each comes after the producers of what it reads; stable otherwise.

    Exported models are usually sorted already; then this returns them in file order.
    """
    nodes = list(graph.node)
    return [nodes[index] for index in topological_indices(graph)]


def topological_indices(graph: GraphProto) -> list[int]:
    """Positions of ``graph.node`` in topological order (the identity for a sorted graph)."""
    nodes = list(graph.node)
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            if name:
                producer[name] = index
    waiting_on = [0] * len(nodes)
    dependents: list[list[int]] = [[] for _ in nodes]
    for index, node in enumerate(nodes):
        for name in set(node_reads(node)):
            source = producer.get(name)
            if source is not None and source != index:
                waiting_on[index] += 1
                dependents[source].append(index)
    ready = [index for index, count in enumerate(waiting_on) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for dependent in dependents[index]:
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                heapq.heappush(ready, dependent)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op_type for i, c in enumerate(waiting_on) if c > 0]
        raise ModelError(
            f"the graph has a cycle through nodes {stuck[:5]}; ONNX graphs must be acyclic"
        )
    return order


def sort_nodes(graph: GraphProto) -> None:
    """Put ``graph.node`` in topological order in place (no copy when already sorted)."""
    order = topological_indices(graph)
    if order == list(range(len(order))):
        return
    ordered = [NodeProto() for _ in order]
    for target, index in zip(ordered, order, strict=True):
        target.CopyFrom(graph.node[index])
    del graph.node[:]
    graph.node.extend(ordered)


def all_value_names(graph: GraphProto) -> set[str]:
    """Every tensor name defined anywhere in a graph, its subgraphs included."""
    names = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.output)
        for sub in subgraphs(node):
            names |= all_value_names(sub)
    return names


def graph_names(graph: GraphProto) -> set[str]:
    """Every node and tensor name of a graph's top level: what a new name must avoid."""
    names = {tensor.name for tensor in graph.initializer}
    names.update(value.name for value in [*graph.input, *graph.output, *graph.value_info])
    for node in graph.node:
        names.add(node.name)
        names.update(node.input)
        names.update(node.output)
    return names


class FreshNames:
    """Hands out names that collide with no name seen so far: ``base``, ``base_1``, ..."""

    def __init__(self, taken: Iterable[str]) -> None:
        self._taken = set(taken)

    def __call__(self, base: str) -> str:
        name, suffix = base, 0
        while name in self._taken:
            suffix += 1
            name = f"{base}_{suffix}"
        self._taken.add(name)
        return name


def rename_uses(graph: GraphProto, old: str, new: str) -> None:
    """Make every node that reads ``old`` (in subgraphs too) read ``new`` instead."""
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name == old:
                node.input[position] = new
        for sub in subgraphs(node):
            if old not in {v.name for v in sub.input} | {t.name for t in sub.initializer}:
                rename_uses(sub, old, new)


def copy_except(source: Any, target: Any, skipped: str) -> None:
    """Copy every set field of a proto message into ``target`` except the one named ``skipped``.

    How a model is split from its weights without copying the weights.
    """
    for field, _ in source.ListFields():
        if field.name != skipped:
            copy_field(source, target, field.name)


def copy_field(source: Any, target: Any, name: str) -> None:
    """Copy the field ``name`` of a proto message into ``target`` (set, or extended)."""
    field, value = source.DESCRIPTOR.fields_by_name[name], getattr(source, name)
    if _is_repeated(field):
        getattr(target, name).extend(value)
    elif field.type == field.TYPE_MESSAGE:
        getattr(target, name).CopyFrom(value)
    else:
        setattr(target, name, value)


def _is_repeated(field: Any) -> bool:
    # protobuf 6 replaced ``label`` by ``is_repeated``; older versions only have ``label``.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == field.LABEL_REPEATED)


def clear_except(message: Any, kept: str) -> None:
    for field, _ in message.ListFields():
        if field.name != kept:
            message.ClearField(field.name)


def tensor_byte_size(tensor: TensorProto) -> int:
    """The serialized size of ``tensor``, counted from its shape when its payload is raw
    bytes (exact to a few bytes of header), else by protobuf.

    protobuf's ``ByteSize`` serializes a raw payload to count it: a second per large
    weight, paid on every session a big model opens.
    """
    dtype = np_dtype(tensor.data_type)
    packed = tensor.data_type in _PACKED_TYPES  # several elements per byte
    if dtype is None or packed or not tensor.HasField("raw_data"):
        return tensor.ByteSize()
    payload = int(np.prod(tensor.dims, dtype=np.int64)) * dtype.itemsize
    name = len(tensor.name.encode())
    fields = (
        (1 + _varint_bytes(name) + name if name else 0)
        + sum(1 + _varint_bytes(dim) for dim in tensor.dims)
        + 1 + _varint_bytes(tensor.data_type)
        + 1 + _varint_bytes(payload) + payload
    )  # fmt: skip
    return fields + 1 + _varint_bytes(fields)  # as an element of a repeated field


def _varint_bytes(value: int) -> int:
    """Bytes of ``value`` as a protobuf varint."""
    return max(1, (value.bit_length() + 6) // 7) if value >= 0 else 10


def uses_external_data(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL and not tensor.HasField("raw_data")


def all_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    """Initializers and tensor attributes of a graph and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == AttributeProto.GRAPH:
                yield from all_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from all_tensors(sub)


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An exception message from onnx or onnxruntime squeezed onto one readable line."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
