"""A read-only, typed view of a model: what the rest of eightbit sees instead of protos.

``Graph`` answers the questions quantization asks (who produces and who reads a tensor,
its type and shape, whether it is constant, which float tensors exist at run time) from
maps built once. Initializer arrays are converted from the protos when asked for, so a
large model's weights are not held twice just by building the view.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from eightbit.errors import ModelError
from eightbit.graph._proto import (
    DEFAULT_DOMAINS,
    FLOAT_TYPES,
    attribute_value,
    default_opset,
    node_reads,
    np_dtype,
    subgraphs,
    tensor_type_of,
    topological_order,
)

# Ops whose output differs between runs although their inputs are constant.
NONDETERMINISTIC_OPS = frozenset(
    {
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)

_FLOAT_DTYPES = frozenset(np_dtype(elem_type) for elem_type in FLOAT_TYPES)
_OBJECT = np.dtype(object)
# Arrays below this size are kept once converted; larger ones are converted on each access.
_CACHED_ARRAY_BYTES = 1 << 20


@dataclass(frozen=True)
class TensorInfo:
    """Element type and shape of a tensor; a shape entry is a size, a symbol, or None."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...] | None

    @property
    def is_float(self) -> bool:
        return self.dtype in _FLOAT_DTYPES


@dataclass(frozen=True)
class Node:
    """One node; ``attrs`` holds Python values (np.ndarray for tensors, GraphProto for graphs)."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(compare=False, repr=False)
    domain: str = ""


class InitializerArrays(Mapping[str, np.ndarray]):
    """Initializers by name as read-only numpy arrays, converted from the protos on access.

    Small arrays are kept once converted; arrays of 1 MiB and more are converted on every
    access, so that a large model's weights are not held twice. Keep a reference to an
    array you use repeatedly.
    """

    def __init__(self, tensors: Mapping[str, TensorProto]) -> None:
        self._tensors = tensors
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        array = numpy_helper.to_array(self._tensors[name])
        array.flags.writeable = False
        if array.nbytes < _CACHED_ARRAY_BYTES:
            self._cache[name] = array
        return array

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


class Graph:
    """Typed view of a (normalized) model. Do not change ``model`` while a view of it is used."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        graph = model.graph
        self.opset: int = default_opset(model) or 0  # 0: no default-domain opset imported
        tensors = {tensor.name: tensor for tensor in graph.initializer}
        self.initializers: Mapping[str, np.ndarray] = InitializerArrays(tensors)

        self._infos: dict[str, TensorInfo] = {}
        for tensor in graph.initializer:
            dtype = np_dtype(tensor.data_type)
            if dtype is not None:
                self._infos[tensor.name] = TensorInfo(tensor.name, dtype, tuple(tensor.dims))
        for value in [*graph.value_info, *graph.output, *graph.input]:
            info = _tensor_info(value)
            if info is not None and value.name not in tensors:
                self._infos[value.name] = info

        # An input that has an initializer is a constant (how IR < 4 models list weights).
        self.inputs: list[TensorInfo] = [
            _declared(value, self._infos) for value in graph.input if value.name not in tensors
        ]
        self.outputs: list[TensorInfo] = [_declared(value, self._infos) for value in graph.output]

        ordered = topological_order(graph)
        self.nodes: list[Node] = [_node(proto) for proto in ordered]
        self._by_name = {node.name: node for node in self.nodes}
        self._producer: dict[str, Node] = {}
        self._consumers: dict[str, list[Node]] = {}
        for node, proto in zip(self.nodes, ordered, strict=True):
            for name in node.outputs:
                if name:
                    self._producer[name] = node
            for name in dict.fromkeys(node_reads(proto)):
                self._consumers.setdefault(name, []).append(node)
        self._constants = _constant_names(set(tensors), ordered)

    def producer(self, tensor: str) -> Node | None:
        """The node that computes ``tensor``; None for inputs, initializers and unknown names."""
        return self._producer.get(tensor)

    def consumers(self, tensor: str) -> list[Node]:
        """Nodes that read ``tensor``, as an input or from inside one of their subgraphs."""
        return list(self._consumers.get(tensor, ()))

    def info(self, tensor: str) -> TensorInfo | None:
        """Type and shape of ``tensor``; None when the model does not say (run normalize)."""
        return self._infos.get(tensor)

    def is_constant(self, tensor: str) -> bool:
        """True for initializers and tensors computed from initializers alone."""
        return tensor in self._constants

    def node(self, name: str) -> Node:
        """The node called ``name``; a ModelError suggesting close names when there is none."""
        found = self._by_name.get(name)
        if found is not None:
            return found
        close = difflib.get_close_matches(name, self._by_name.keys(), n=5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelError(f"the model has no node named {name!r}{hint}")

    def float_activations(self) -> list[str]:
        """Float tensors computed at run time (float inputs first), in topological order.

        Node outputs whose type is unknown are left out; ``normalize`` infers them.
        """
        names = [info.name for info in self.inputs if info.is_float]
        for node in self.nodes:
            for name in node.outputs:
                info = self._infos.get(name)
                if name and not self.is_constant(name) and info is not None and info.is_float:
                    names.append(name)
        return names


def _constant_names(initializers: set[str], ordered: list[onnx.NodeProto]) -> frozenset[str]:
    """Initializers and the outputs of deterministic nodes that read only constants."""
    constants = set(initializers)
    for proto in ordered:
        if proto.op_type in NONDETERMINISTIC_OPS or proto.domain not in DEFAULT_DOMAINS:
            continue
        if any(True for _ in subgraphs(proto)):
            continue
        if all(name in constants for name in proto.input if name):
            constants.update(name for name in proto.output if name)
    return frozenset(constants)


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo | None:
    typed = tensor_type_of(value)
    if typed is None:
        return None
    dtype = np_dtype(typed[0])
    return None if dtype is None else TensorInfo(value.name, dtype, typed[1])


def _declared(value: onnx.ValueInfoProto, infos: Mapping[str, TensorInfo]) -> TensorInfo:
    """Info of a graph input or output; dtype object when it is not a typed tensor."""
    return infos.get(value.name) or TensorInfo(value.name, _OBJECT, None)


def _node(proto: onnx.NodeProto) -> Node:
    return Node(
        name=proto.name,
        op_type=proto.op_type,
        inputs=tuple(proto.input),
        outputs=tuple(proto.output),
        attrs=MappingProxyType({attr.name: attribute_value(attr) for attr in proto.attribute}),
        domain=proto.domain,
    )
