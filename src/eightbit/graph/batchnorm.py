"""Folding inference BatchNormalization into the linear node before it.

In inference BN is a per-channel affine map, ``y = s·x + t`` with ``s = γ/√(σ²+ε)`` and
``t = β − s·μ``. When ``x`` comes straight from a Conv, ConvTranspose, Gemm or MatMul whose
weight is constant and nobody else reads ``x``, the map moves into that node: output channel
``c`` of the weight is scaled by ``s[c]`` and the bias becomes ``s·b + t``. Quantization then
sees one weight with the BN's scaling already in it, which is what runs on the device.
A BN after anything else (a ReLU, an Add, a graph input) stays and is reported.

A constant bias added after a Conv or ConvTranspose (``Conv → Add(c)``, how Paddle2ONNX
writes every convolution's bias) is the same map with ``s = 1``: ``fold_bias_adds`` moves
``c`` into the bias, so the BN that may follow is straight after the linear node again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
from onnx import GraphProto, ModelProto, NodeProto, helper, numpy_helper

from eightbit.graph._proto import (
    DEFAULT_DOMAINS,
    FLOAT_TYPES,
    FreshNames,
    all_value_names,
    node_reads,
    tensor_type_of,
)

log = logging.getLogger("eightbit.graph")

# Where a producer keeps its weight and bias (NNCF-style facts, not code paths).
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
_BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


@dataclass(frozen=True)
class PerChannelAffine:
    """``y[:, c] = scale[c]·x[:, c] + shift[c]``, in float64."""

    scale: np.ndarray
    shift: np.ndarray


class _Weights:
    """Initializer access for the fold: read as arrays, write without disturbing sharers."""

    def __init__(self, graph: GraphProto) -> None:
        self._graph = graph
        self._tensors = {tensor.name: tensor for tensor in graph.initializer}
        self._readers = Counter(name for node in graph.node for name in set(node_reads(node)))
        self._fresh = FreshNames(all_value_names(graph))

    def array(self, name: str) -> np.ndarray | None:
        tensor = self._tensors.get(name)
        if tensor is None or tensor.data_type not in FLOAT_TYPES:
            return None
        return numpy_helper.to_array(tensor)

    def store(self, node: NodeProto, position: int, value: np.ndarray, base: str) -> None:
        """Make input ``position`` of ``node`` the constant ``value``.

        The node's own initializer is overwritten when only this node reads it; a shared or
        missing one gets a new initializer.
        """
        current = _optional_input(node, position)
        if current in self._tensors and self._readers[current] == 1:
            self._tensors[current].CopyFrom(numpy_helper.from_array(value, current))
            return
        name = self._fresh(base)
        self._graph.initializer.append(numpy_helper.from_array(value, name))
        self._tensors[name] = self._graph.initializer[-1]
        self._readers[name] += 1
        if current:
            self._readers[current] -= 1
        while len(node.input) <= position:
            node.input.append("")
        node.input[position] = name


def is_batchnorm(node: NodeProto) -> bool:
    """An ONNX BatchNormalization (what this module folds, and bias correction reads)."""
    return node.op_type == "BatchNormalization" and node.domain in DEFAULT_DOMAINS


def fold_batchnorms(model: ModelProto) -> list[str]:
    """Fold every BN of the main graph that can be folded (in place); return their names."""
    graph = model.graph
    weights = _Weights(graph)
    producers = {name: node for node in graph.node for name in node.output if name}
    readers = Counter(name for node in graph.node for name in set(node_reads(node)))
    readers.update(value.name for value in graph.output)
    ranks = _known_ranks(graph)
    folded: list[str] = []
    removed: list[int] = []
    for index, bn in enumerate(graph.node):
        if not is_batchnorm(bn):
            continue
        producer = producers.get(bn.input[0])
        if producer is None:
            reason: str | None = "its input is a graph input or a constant, not a node's output"
        else:
            reason = _why_not_foldable(bn, producer, readers, weights) or _fold(
                bn, producer, weights, ranks
            )
        if reason is not None:
            log.info("kept BatchNormalization %r: %s", bn.name, reason)
            continue
        if bn.op_type == "BatchNormalization":  # not turned into a bias Add: now redundant
            removed.append(index)
            producers[bn.output[0]] = producer  # a BN right after this one may fold too
        folded.append(bn.name)
    for index in reversed(removed):
        del graph.node[index]
    return folded


def fold_bias_adds(model: ModelProto) -> list[str]:
    """Fold every ``Conv/ConvTranspose → Add(constant per output channel)`` into the
    producer's bias (in place); return the Adds' names.

    The constant must broadcast along the output channels only (shape ``(C, 1, …)``,
    ``(1, C, 1, …)`` or one value), and the producer's output must have no other reader.
    """
    graph = model.graph
    weights = _Weights(graph)
    producers = {name: node for node in graph.node for name in node.output if name}
    readers = Counter(name for node in graph.node for name in set(node_reads(node)))
    readers.update(value.name for value in graph.output)
    folded: list[str] = []
    removed: list[int] = []
    for index, add in enumerate(graph.node):
        found = _bias_add(add, producers, readers, weights)
        if found is None:
            continue
        producer, shift = found
        affine = PerChannelAffine(scale=np.ones_like(shift), shift=shift)
        if _fold_into(producer, affine, weights, {}) is not None:
            continue
        producer.output[0] = add.output[0]
        producers[add.output[0]] = producer
        removed.append(index)
        folded.append(add.name)
    for index in reversed(removed):
        del graph.node[index]
    return folded


def _bias_add(
    add: NodeProto,
    producers: dict[str, NodeProto],
    readers: Counter[str],
    weights: _Weights,
) -> tuple[NodeProto, np.ndarray] | None:
    """The Conv/ConvTranspose whose output ``add`` shifts by a per-channel constant, and
    that constant (one value per output channel, float64); None when ``add`` is not one."""
    if add.op_type != "Add" or add.domain not in DEFAULT_DOMAINS or len(add.input) != 2:
        return None
    for data, constant in (add.input, reversed(add.input)):
        producer = producers.get(data)
        value = weights.array(constant)
        if producer is None or value is None or readers[data] != 1:
            continue
        if producer.op_type not in ("Conv", "ConvTranspose"):
            continue
        if producer.domain not in DEFAULT_DOMAINS:
            continue
        weight = weights.array(producer.input[1])
        if weight is None:
            continue
        shift = _channel_values(value, weight.ndim, _output_channels(producer, weight))
        if shift is not None:
            return producer, shift
    return None


def _output_channels(producer: NodeProto, weight: np.ndarray) -> int:
    """Conv weights are (M, C/g, k…); ConvTranspose weights are (C, M/g, k…) in g groups."""
    if producer.op_type == "Conv":
        return int(weight.shape[0])
    group = next((attr.i for attr in producer.attribute if attr.name == "group"), 1)
    return int(weight.shape[1]) * group


def _channel_values(value: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``value`` as one float64 per channel when it broadcasts along axis 1 of a rank-``rank``
    tensor only (never along the batch or spatial axes); None otherwise."""
    if value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if any(size != 1 for axis, size in enumerate(shape) if axis != 1):
        return None
    if shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float64), (channels,)).copy()


def _fold(
    bn: NodeProto, producer: NodeProto, weights: _Weights, ranks: dict[str, int]
) -> str | None:
    """Move the BN's affine map into ``producer``; or say why it cannot, changing nothing.

    MatMul has no bias input, so the BN turns into the Add of its shift; any other
    producer absorbs the shift into its bias and writes the BN's output itself.
    """
    affine = _affine_of(bn, weights)
    reason = _fold_into(producer, affine, weights, ranks)
    if reason is not None:
        return reason
    if producer.op_type == "MatMul":
        _turn_into_bias_add(bn, affine, weights)
    else:
        producer.output[0] = bn.output[0]
    return None


def _why_not_foldable(
    bn: NodeProto, producer: NodeProto, readers: Counter[str], weights: _Weights
) -> str | None:
    attrs = {attr.name: attr for attr in bn.attribute}
    if "training_mode" in attrs and attrs["training_mode"].i != 0:
        return "it runs in training mode"
    if "spatial" in attrs and attrs["spatial"].i == 0:
        return "it normalizes per element (spatial=0)"
    if any(name and readers[name] for name in bn.output[1:]):
        return "its running statistics outputs are used"
    if any(weights.array(name) is None for name in bn.input[1:5]):
        return "its scale, bias, mean or variance is not a float constant"
    if producer.domain not in DEFAULT_DOMAINS or producer.op_type not in _WEIGHT_INPUT:
        return f"its input comes from {producer.op_type} {producer.name!r}, not a linear node"
    if readers[bn.input[0]] != 1:
        return f"{producer.op_type} {producer.name!r} output is also read elsewhere"
    return None


def _affine_of(bn: NodeProto, weights: _Weights) -> PerChannelAffine:
    gamma, beta, mean, var = (np.asarray(weights.array(n), np.float64) for n in bn.input[1:5])
    epsilon = next((attr.f for attr in bn.attribute if attr.name == "epsilon"), 1e-5)
    scale = gamma / np.sqrt(var + epsilon)
    return PerChannelAffine(scale=scale, shift=beta - scale * mean)


def _fold_into(
    producer: NodeProto, affine: PerChannelAffine, weights: _Weights, ranks: dict[str, int]
) -> str | None:
    """Scale the producer's weight and bias by ``affine``; or say why it cannot."""
    weight_name = producer.input[_WEIGHT_INPUT[producer.op_type]]
    weight = weights.array(weight_name)
    if weight is None:
        return f"{producer.op_type} {producer.name!r} weight is not a float constant"
    bias_input = _optional_input(producer, _BIAS_INPUT.get(producer.op_type))
    if bias_input and weights.array(bias_input) is None:
        return f"{producer.op_type} {producer.name!r} bias is not a float constant"
    channels = affine.scale.size
    if affine.scale.shape != (channels,):
        return "its parameters are not one value per channel"
    if producer.op_type == "Gemm":
        return _fold_into_gemm(producer, affine, weight, weights)
    if producer.op_type == "MatMul":
        if weight.ndim != 2 or ranks.get(producer.input[0]) != 2:
            return f"MatMul {producer.name!r} output channels are not on axis 1"
        if weight.shape[1] != channels:
            return f"MatMul {producer.name!r} has {weight.shape[1]} outputs, BN {channels}"
        weights.store(producer, 1, _cast(weight * affine.scale, weight), weight_name)
        return None
    scaled = _scale_conv_weight(producer, weight, affine.scale)
    if scaled is None:
        return f"{producer.op_type} {producer.name!r} output channels do not match the BN's"
    bias_name = f"{producer.name or producer.op_type}_bias"
    bias = _bias(producer, weights, channels)
    weights.store(producer, 1, _cast(scaled, weight), weight_name)
    weights.store(producer, 2, _cast(affine.scale * bias + affine.shift, weight), bias_name)
    return None


def _scale_conv_weight(
    producer: NodeProto, weight: np.ndarray, scale: np.ndarray
) -> np.ndarray | None:
    """Conv weights are (M, C/g, k…); ConvTranspose weights are (C, M/g, k…) in g groups."""
    spatial = (1,) * (weight.ndim - 2)
    if producer.op_type == "Conv":
        if weight.shape[0] != scale.size:
            return None
        return weight * scale.reshape(-1, 1, *spatial)
    group = next((attr.i for attr in producer.attribute if attr.name == "group"), 1)
    in_channels, out_per_group = weight.shape[:2]
    if out_per_group * group != scale.size or in_channels % group:
        return None
    grouped = weight.reshape(group, in_channels // group, out_per_group, *weight.shape[2:])
    return (grouped * scale.reshape(group, 1, out_per_group, *spatial)).reshape(weight.shape)


def _fold_into_gemm(
    gemm: NodeProto, affine: PerChannelAffine, weight: np.ndarray, weights: _Weights
) -> str | None:
    """``Y = α·A·B + β·C`` becomes ``A·(α·B·s) + (β·s·C + t)`` with α = β = 1."""
    attrs = {attr.name: helper.get_attribute_value(attr) for attr in gemm.attribute}
    trans_b = bool(attrs.get("transB", 0))
    channels = affine.scale.size
    if weight.ndim != 2 or weight.shape[0 if trans_b else 1] != channels:
        return f"Gemm {gemm.name!r} output channels do not match the BN's"
    column_scale = affine.scale[:, None] if trans_b else affine.scale
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    bias = beta * _bias(gemm, weights, channels)
    weights.store(gemm, 1, _cast(alpha * weight * column_scale, weight), gemm.input[1])
    new_bias = affine.scale * bias + affine.shift
    weights.store(gemm, 2, _cast(new_bias, weight), f"{gemm.name or 'Gemm'}_bias")
    for attr in gemm.attribute:
        if attr.name in ("alpha", "beta"):
            attr.f = 1.0
    return None


def _optional_input(node: NodeProto, position: int | None) -> str:
    """Name of input ``position``; "" when the node does not have it."""
    if position is None or position >= len(node.input):
        return ""
    return node.input[position]


def _bias(producer: NodeProto, weights: _Weights, channels: int) -> np.ndarray:
    """The producer's bias in float64 (zeros when it has none)."""
    bias_input = _optional_input(producer, _BIAS_INPUT[producer.op_type])
    bias = weights.array(bias_input) if bias_input else None
    return np.zeros(channels) if bias is None else np.asarray(bias, np.float64)


def _turn_into_bias_add(bn: NodeProto, affine: PerChannelAffine, weights: _Weights) -> None:
    """The BN node becomes ``Add(matmul_output, t)``, keeping its name and output."""
    gamma = weights.array(bn.input[1])
    assert gamma is not None  # checked by _why_not_foldable
    bn.op_type = "Add"
    del bn.attribute[:]
    data = bn.input[0]
    del bn.input[:]
    bn.input.extend([data, ""])
    del bn.output[1:]
    shift = _cast(affine.shift, gamma)
    weights.store(bn, 1, shift, f"{bn.name or 'BatchNormalization'}_shift")


def _cast(value: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value.astype(like.dtype))


def _known_ranks(graph: GraphProto) -> dict[str, int]:
    ranks = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        typed = tensor_type_of(value)
        if typed is not None and typed[1] is not None:
            ranks[value.name] = len(typed[1])
    return ranks
