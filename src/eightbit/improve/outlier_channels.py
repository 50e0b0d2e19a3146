"""``split_outlier_channels``: a matrix product's few huge output channels computed apart
(docs/numerics.md §I.12).

A trained BERT's feed-forward output carries one to four channels (the residual stream's
outlier dimensions) tens to hundreds of times wider than the rest: all-MiniLM-L6-v2's
layer 0 writes channel 99 up to 195 while the median channel stays under 1. One per-tensor
int8 grid for that output leaves the other channels two or three levels. Here the layer
``Y = X·W`` becomes

    Y = X·W_main + (X·W[:, O])·E

with ``W_main`` = ``W`` with the outlier columns ``O`` zeroed, and ``E`` the ``|O| x N``
one-hot matrix putting each outlier column back at its place: one int8 matrix product
whose output grid spans the ordinary channels, the few outlier columns in float on its
dequantized input, and a float Add. The float function is the same (up to float32
summation order).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit.calibrate.data import DataLike
from eightbit.graph import Graph, Node
from eightbit.graph.patterns import OUTLIER_NOTE
from eightbit.improve.measure import channel_rows, count, read_samples
from eightbit.ops import Contraction, lookup
from eightbit.ops.spec import optional_input
from eightbit.steps import StepReport

SAMPLES = 16
# A channel is an outlier when its largest magnitude exceeds FACTOR times the median
# channel's; at most MAX_OUTLIERS of them per layer (more is not a few outliers but a wide
# output, which splitting would not help).
FACTOR = 6.0
MAX_OUTLIERS = 4
# Split only when the rest's range is at most this fraction of the whole output's.
MIN_RANGE_CUT = 0.5


@dataclass(frozen=True)
class Layer:
    """A matrix product over sequences (input rank >= 3) with a constant ``[K, N]`` weight."""

    node: Node
    weight: str
    output: str


def sequence_layers(graph: Graph) -> list[Layer]:
    """Matrix products whose data input has rank >= 3 (tokens, patches: transformers; a
    CNN's classifier reads rank 2 and is never split) and whose weight is a constant
    ``[K, N]`` only they read, their output not a graph output."""
    outputs = {info.name for info in graph.outputs}
    layers = []
    for node in graph.nodes:
        spec = lookup(node.op_type, node.domain)
        if spec is None or spec.contraction is not Contraction.MATRIX or spec.weight_port != 1:
            continue
        if spec.reason_not_quantized(node, graph) is not None or len(node.inputs) != 2:
            continue
        weight = optional_input(node, 1)
        info = graph.info(node.inputs[0])
        if weight is None or weight not in graph.initializers or info is None:
            continue
        value = graph.initializers[weight]
        if value.ndim != 2 or value.dtype.kind != "f" or len(graph.consumers(weight)) != 1:
            continue
        if info.shape is None or len(info.shape) < 3 or node.outputs[0] in outputs:
            continue
        layers.append(Layer(node, weight, node.outputs[0]))
    return layers


def outlier_columns(channel_max: np.ndarray) -> np.ndarray:
    """The outlier channels of one output by the rule above (empty: leave the layer)."""
    median = float(np.median(channel_max))
    if median <= 0:
        return np.zeros(0, np.int64)
    ordered = np.argsort(-channel_max, kind="stable")
    chosen = [int(j) for j in ordered[:MAX_OUTLIERS] if channel_max[j] > FACTOR * median]
    if not chosen:
        return np.zeros(0, np.int64)
    rest = np.delete(channel_max, chosen)
    if float(rest.max()) > MIN_RANGE_CUT * float(channel_max.max()):
        return np.zeros(0, np.int64)
    return np.array(sorted(chosen), np.int64)


def split_outlier_channels(
    model: onnx.ModelProto,
    data: DataLike,
    *,
    samples: int = SAMPLES,
    threads: int | None = None,
) -> tuple[onnx.ModelProto, StepReport | None]:
    """A copy of the normalized float ``model`` with the outlier channels of its sequence
    matrix products computed apart; ``(model, None)`` when there is nothing to split."""
    started = time.perf_counter()
    graph = Graph(model)
    layers = sequence_layers(graph)
    if not layers:
        return model, None
    batches = read_samples(data, graph, samples)
    maxima = _channel_maxima(model, layers, batches, threads)
    chosen = [(layer, outlier_columns(maxima[layer.output])) for layer in layers]
    chosen = [(layer, columns) for layer, columns in chosen if len(columns)]
    if not chosen:
        return model, None
    result = _write(model, graph, chosen)
    notes = [
        f"{len(chosen)} of {len(layers)} matrix product(s) over sequences had 1-{MAX_OUTLIERS} "
        f"output channel(s) wider than {FACTOR:g}x the median: computed apart "
        f"(§I.12), on {count(batches)} calibration samples",
        *(
            f"{layer.node.name}: channel(s) {', '.join(str(c) for c in columns)}"
            for layer, columns in chosen
        ),
    ]
    seconds = time.perf_counter() - started
    return result, StepReport("outlier_channels", seconds, None, None, notes=tuple(notes))


def _channel_maxima(
    model: onnx.ModelProto,
    layers: Sequence[Layer],
    batches: Sequence[dict[str, np.ndarray]],
    threads: int | None,
) -> dict[str, np.ndarray]:
    names = [layer.output for layer in layers]
    maxima: dict[str, np.ndarray] = {}
    for name, rows in channel_rows(model, names, batches, threads):
        seen = np.abs(rows.astype(np.float64)).max(axis=0)
        maxima[name] = seen if name not in maxima else np.maximum(maxima[name], seen)
    return maxima


def _write(
    model: onnx.ModelProto, graph: Graph, chosen: Sequence[tuple[Layer, np.ndarray]]
) -> onnx.ModelProto:
    result = onnx.ModelProto()
    result.CopyFrom(model)
    proto = result.graph
    taken = {t.name for t in proto.initializer} | {
        name for node in proto.node for name in (*node.output, *node.input, node.name)
    }
    by_name = {node.name: node for node in proto.node}
    initializers = {tensor.name: tensor for tensor in proto.initializer}
    for layer, columns in chosen:
        weight = np.asarray(graph.initializers[layer.weight])
        main = weight.copy()
        main[:, columns] = 0
        initializers[layer.weight].CopyFrom(numpy_helper.from_array(main, layer.weight))
        apart = np.ascontiguousarray(weight[:, columns])
        place = np.zeros((len(columns), weight.shape[1]), weight.dtype)
        place[np.arange(len(columns)), columns] = 1
        node = by_name[layer.node.name]
        base = layer.node.name
        names = {
            key: _fresh(f"{base}_{key}", taken)
            for key in (
                "main",
                "apart",
                "apart_out",
                "placed",
                "place",
                "w_apart",
                "add",
                "scatter",
            )
        }
        proto.initializer.extend(
            [
                numpy_helper.from_array(apart, names["w_apart"]),
                numpy_helper.from_array(place, names["place"]),
            ]
        )
        node.output[0] = names["main"]
        extra = [
            helper.make_node(
                node.op_type,
                [node.input[0], names["w_apart"]],
                [names["apart_out"]],
                name=names["apart"],
            ),
            helper.make_node(
                "MatMul",
                [names["apart_out"], names["place"]],
                [names["placed"]],
                name=names["scatter"],
            ),
            helper.make_node(
                "Add", [names["main"], names["placed"]], [layer.output], name=names["add"]
            ),
        ]
        _declare(
            proto, layer.output, names["main"], names["placed"], names["apart_out"], len(columns)
        )
        position = list(proto.node).index(node) + 1
        for offset, new in enumerate(extra):
            new.doc_string = f"{OUTLIER_NOTE} computed apart in float (§I.12)"
            proto.node.insert(position + offset, new)
    return result


def _declare(
    graph: onnx.GraphProto, output: str, main: str, placed: str, apart: str, width: int
) -> None:
    """Type and shape of the new tensors, from the layer's output (the planner quantizes
    only tensors whose type it knows)."""
    declared = next((v for v in graph.value_info if v.name == output), None)
    if declared is None:
        return
    for name in (main, placed):
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(declared)
        copy.name = name
        graph.value_info.append(copy)
    narrow = onnx.ValueInfoProto()
    narrow.CopyFrom(declared)
    narrow.name = apart
    dims = narrow.type.tensor_type.shape.dim
    if len(dims):
        dims[len(dims) - 1].Clear()
        dims[len(dims) - 1].dim_value = width
    graph.value_info.append(narrow)


def _fresh(base: str, taken: set[str]) -> str:
    name, index = base, 1
    while name in taken:
        name, index = f"{base}_{index}", index + 1
    taken.add(name)
    return name
