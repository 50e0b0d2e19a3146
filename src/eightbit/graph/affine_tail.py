"""The per-channel affine tail of a tensor: ``X = n·γ + β`` along its last axis.

A LayerNorm ends that way, written out (``Mul`` by γ then ``Add`` of β, as PyTorch and
tf2onnx write it) or as one ``LayerNormalization`` node (its scale and bias inputs).
Dividing γ and β by ``s`` divides ``X`` by ``s`` channel by channel, which is what
SmoothQuant needs of the producer of a tensor it smooths (docs/numerics.md §I.11).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eightbit.graph.view import Graph, Node


@dataclass(frozen=True)
class Port:
    """Input ``port`` of node ``node``: a constant of ``C`` values along the last axis."""

    node: str
    port: int


@dataclass(frozen=True)
class AffineTail:
    """Where ``X``'s per-channel scale γ and bias β live (``bias`` None: there is none)."""

    scale: Port
    bias: Port | None


def channel_affine_tail(graph: Graph, tensor: str, channels: int) -> AffineTail | None:
    """The affine tail that computes ``tensor`` (``channels`` wide on its last axis), or None."""
    node = graph.producer(tensor)
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "LayerNormalization":
        return _layer_normalization(graph, node, channels)
    if node.op_type == "Mul":
        port = _channel_constant(graph, node, channels)
        return None if port is None else AffineTail(port, None)
    if node.op_type == "Add":
        bias = _channel_constant(graph, node, channels)
        if bias is None:
            return None
        scaled = graph.producer(node.inputs[1 - bias.port])
        if scaled is None or scaled.op_type != "Mul" or scaled.domain not in ("", "ai.onnx"):
            return None
        if len(graph.consumers(scaled.outputs[0])) != 1:
            return None  # n·γ read elsewhere too: dividing γ would change that reader
        scale = _channel_constant(graph, scaled, channels)
        return None if scale is None else AffineTail(scale, bias)
    return None


def _layer_normalization(graph: Graph, node: Node, channels: int) -> AffineTail | None:
    """A LayerNormalization over the last axis only, with constant scale (and bias)."""
    info = graph.info(node.inputs[0])
    rank = None if info is None or info.shape is None else len(info.shape)
    axis = int(node.attrs.get("axis", -1))
    if rank is None or axis % rank != rank - 1:
        return None
    scale = _vector(graph, node.inputs[1], channels)
    if scale is None:
        return None
    if len(node.inputs) > 2 and node.inputs[2]:
        if _vector(graph, node.inputs[2], channels) is None:
            return None
        return AffineTail(Port(node.name, 1), Port(node.name, 2))
    return AffineTail(Port(node.name, 1), None)


def _channel_constant(graph: Graph, node: Node, channels: int) -> Port | None:
    """The port of a binary ``node`` that holds a per-channel constant; the other input
    must be computed (one variable input, one constant)."""
    if len(node.inputs) != 2:
        return None
    for port in (0, 1):
        other = node.inputs[1 - port]
        if graph.is_constant(other):
            continue
        if _vector(graph, node.inputs[port], channels) is not None:
            return Port(node.name, port)
    return None


def _vector(graph: Graph, name: str, channels: int) -> np.ndarray | None:
    """The initializer ``name`` when it holds ``channels`` float values along the last axis
    (shape ``(C,)`` or ``(1, ..., 1, C)``)."""
    if name not in graph.initializers:
        return None
    value = graph.initializers[name]
    if value.dtype.kind != "f" or value.ndim == 0 or value.shape[-1] != channels:
        return None
    if any(size != 1 for size in value.shape[:-1]):
        return None
    return value
