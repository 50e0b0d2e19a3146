"""The edits of centring (docs/numerics.md §Q16.1): biases, clamps, explicit pads, ranges.

``eightbit.improve.centre`` finds the groups of tensors to shift and their ``c``; this
module writes them: the source Conv's bias lowered by c, each clamp's bounds moved by −c,
each reader's bias raised by ``c · Σ W`` (Q.15.1), a padded Conv's zero padding made an
explicit Pad of −c, and every member's range, extremes and histogram moved by −c.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit.calibrate import Ranges
from eightbit.calibrate.histogram import Histogram
from eightbit.calibrate.ranges import TensorRange
from eightbit.graph import Graph, Node
from eightbit.ops import lookup
from eightbit.ops.spec import optional_input

if TYPE_CHECKING:
    from eightbit.improve.centre import Group


def rewrite(model: onnx.ModelProto, graph: Graph, groups: list[Group]) -> dict[str, str]:
    """Write every group's shift into ``model`` (a copy ``graph`` views the original of);
    returns each Pad output made for a padded reader, with the member it pads."""
    protos = {node.name: node for node in model.graph.node}
    tensors = {tensor.name: tensor for tensor in model.graph.initializer}
    replaced: set[str] = set()
    copies: dict[str, str] = {}
    for group in groups:
        shift = group.shift
        bias = tensors[group.source.inputs[2]]
        _store(bias, numpy_helper.to_array(bias).astype(np.float64) - shift)
        for clamp, bounds in group.clamps:
            replaced.update(name for name in clamp.inputs[1:] if name)
            _move_clamp(model, protos[clamp.name], bounds, shift)
        for reader, member in group.readers:
            weights, out_axis, pads = _weights(graph, reader)
            if any(pads):
                padded = _pad_explicitly(model, protos[reader.name], graph, pads, shift)
                copies[padded] = member
            others = tuple(axis for axis in range(weights.ndim) if axis != out_axis)
            raised = shift * weights.sum(axis=others)  # Σ W over what one output reads
            _raise_bias(model, protos[reader.name], tensors, raised)
    _drop_unread(model, replaced)
    return copies


def _weights(graph: Graph, reader: Node) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """A reader's weight (float64), its output-channel axis, and its explicit pads."""
    spec = lookup(reader.op_type, reader.domain)
    assert spec is not None and spec.weight_port is not None and spec.weight_layout is not None
    name = optional_input(reader, spec.weight_port)
    assert name is not None  # centre checked the weight
    weights = graph.initializers[name].astype(np.float64)
    layout = spec.weight_layout(reader.attrs, weights.shape)
    assert layout is not None  # centre checked the layout
    window = None if spec.window is None else spec.window(reader.attrs, weights.shape)
    explicit = window is not None and window.auto_pad == "NOTSET"
    return weights, layout.out_axis, window.pads if explicit and window is not None else ()


def _move_clamp(
    model: onnx.ModelProto, proto: onnx.NodeProto, bounds: tuple[float, float], shift: float
) -> None:
    """The clamp as Clip(low − c, high − c), its bounds new initializers of its own."""
    low, high = bounds
    names = [f"{proto.output[0]}_centred_min"]
    values = [np.array(low - shift, np.float32)]
    if math.isfinite(high):
        names.append(f"{proto.output[0]}_centred_max")
        values.append(np.array(high - shift, np.float32))
    for name, value in zip(names, values, strict=True):
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    proto.op_type = "Clip"
    del proto.attribute[:]
    del proto.input[1:]
    proto.input.extend(names)


def _pad_explicitly(
    model: onnx.ModelProto,
    proto: onnx.NodeProto,
    graph: Graph,
    pads: tuple[int, ...],
    shift: float,
) -> str:
    """The reader's zero padding as a Pad of −c in front of it (zero padding of y is −c
    padding of y'), and the reader unpadded; returns the Pad's output."""
    half = len(pads) // 2
    # Pad's pads: begins of every axis, then ends; batch and channel axes get none.
    pad_values = np.array([0, 0, *pads[:half], 0, 0, *pads[half:]], np.int64)
    base = f"{proto.name}_centred_pad"
    padded = f"{base}_output"
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(pad_values, f"{base}_pads"),
            numpy_helper.from_array(np.array(-shift, np.float32), f"{base}_value"),
        ]
    )
    source = proto.input[0]
    node = helper.make_node(
        "Pad", [source, f"{base}_pads", f"{base}_value"], [padded], name=base, mode="constant"
    )
    at = next(i for i, n in enumerate(model.graph.node) if n.name == proto.name)
    model.graph.node.insert(at, node)
    proto.input[0] = padded
    for attribute in proto.attribute:
        if attribute.name == "pads":
            del attribute.ints[:]
            attribute.ints.extend([0] * len(pads))
    model.graph.value_info.append(_padded_info(graph, source, padded, pad_values))
    return padded


def _padded_info(graph: Graph, tensor: str, padded: str, pads: np.ndarray) -> onnx.ValueInfoProto:
    """The Pad output's type and shape (the plan quantizes only tensors of known type)."""
    info = graph.info(tensor)
    shape: list[int | str | None] | None = None
    if info is not None and info.shape is not None and len(info.shape) * 2 == pads.size:
        rank = len(info.shape)
        shape = [
            size + int(pads[axis] + pads[axis + rank]) if isinstance(size, int) else None
            for axis, size in enumerate(info.shape)
        ]
    return helper.make_tensor_value_info(padded, onnx.TensorProto.FLOAT, shape)


def _raise_bias(
    model: onnx.ModelProto,
    proto: onnx.NodeProto,
    tensors: dict[str, onnx.TensorProto],
    raised: np.ndarray,
) -> None:
    if len(proto.input) > 2 and proto.input[2]:
        bias = tensors[proto.input[2]]
        _store(bias, numpy_helper.to_array(bias).astype(np.float64) + raised)
        return
    name = f"{proto.name}_centred_bias"
    model.graph.initializer.append(numpy_helper.from_array(raised.astype(np.float32), name))
    tensors[name] = model.graph.initializer[-1]
    while len(proto.input) < 3:
        proto.input.append("")
    proto.input[2] = name


def _store(tensor: onnx.TensorProto, value: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(value.astype(np.float32), tensor.name))


def _drop_unread(model: onnx.ModelProto, replaced: set[str]) -> None:
    """The clamps' old bounds (often one constant every ReLU6 shares) when nothing reads them."""
    read = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name not in replaced or t.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def shift_ranges(
    ranges: Ranges, shifts: Mapping[str, float], copies: Mapping[str, str] | None = None
) -> Ranges:
    """``ranges`` with each tensor of ``shifts`` moved by −c: its selected range, its
    extremes and its histogram (exactly, when c is a whole number of bins). Each tensor of
    ``copies`` (a Pad's output) takes the range of the tensor it pads: the Pad writes −c,
    the lower end of that range, and keeps its input's parameters (§Q6)."""
    tensors = dict(ranges.tensors)
    histograms = {name: ranges.histogram(name) for name in ranges}
    for name, shift in shifts.items():
        if name not in tensors:
            continue
        old = tensors[name]
        tensors[name] = TensorRange(
            old.min - shift, old.max - shift, old.observed_min - shift, old.observed_max - shift
        )
        histograms[name] = _shift_histogram(histograms[name], shift)
    for copy, source in (copies or {}).items():
        if source in tensors:
            tensors[copy] = tensors[source]
            histograms[copy] = histograms[source]
    kept = {name: h for name, h in histograms.items() if h is not None}
    return Ranges(
        ranges.method, tensors, ranges.samples, skipped=ranges.skipped, histograms=kept,
        options=ranges.options,
    )  # fmt: skip


def _shift_histogram(histogram: Histogram | None, shift: float) -> Histogram | None:
    """The histogram of ``x − c``: the same counts, ``c / width`` bins lower (exact when c
    is a whole number of bins; None otherwise, as there is no exact one)."""
    if histogram is None or histogram.empty:
        return histogram
    bins = shift / math.ldexp(1.0, histogram.exponent)
    if bins != round(bins):
        return None
    moved = histogram.copy()
    moved.offset -= round(bins)
    moved.min, moved.max = histogram.min - shift, histogram.max - shift
    return moved
