"""Centring non-negative activations for a symmetric int8 grid (docs/numerics.md §Q16.1).

A symmetric grid (zero point 0, TensorRT) spends half its codes on negative values, so a
tensor after a Relu or ReLU6 uses 128 of its 256 codes: one bit lost against an affine
uint8 grid. When the clamp reads a Conv with a bias and every reader of its output is a
Conv, the network computes the same function with the tensor shifted by a constant ``c``
(Q.15.1):

    y' = clamp(z − c, lo − c, hi − c) = y − c          (the layer's bias lowered by c)
    Conv(y) = Conv(Pad(y', −c)) + c · Σ W               (each reader's bias raised)

With ``c`` the middle of the calibrated range, ``y'`` is centred on 0 and the symmetric
grid covers it with all 256 codes: the bit comes back. A reader without padding needs
nothing more; a padded reader's zero padding becomes an explicit ``Pad`` of ``−c`` (zero
padding of ``y`` is ``−c`` padding of ``y'``), which moves int8 values (§Q11).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit.calibrate import Ranges
from eightbit.calibrate.histogram import Histogram
from eightbit.calibrate.ranges import TensorRange
from eightbit.graph import Graph, Node
from eightbit.ops.spec import attr, optional_input
from eightbit.steps import StepReport

NAME = "centre"
# Clamps whose lower bound is 0: their output is non-negative.
_CLAMPS = ("Relu", "Clip")


@dataclass(frozen=True)
class Centring:
    """Tensor ``tensor`` (the output of ``clamp``, computed from ``layer``) shifted by
    ``shift``; ``readers`` are the Convs whose biases take it back."""

    tensor: str
    clamp: Node
    layer: Node
    readers: tuple[Node, ...]
    shift: float


def centre_activations(
    model: onnx.ModelProto, ranges: Ranges
) -> tuple[onnx.ModelProto, Ranges, StepReport]:
    """``model`` with every centrable clamp output shifted to the middle of its range
    (Q.15.1), the ranges shifted with it, and what was done; the same function."""
    started = time.perf_counter()
    graph = Graph(model)
    found = [c for c in (_centring(graph, node, ranges) for node in graph.nodes) if c]
    if not found:
        note = "nothing centred: no clamp output read only by unpadded Convs"
        return (
            model,
            ranges,
            StepReport(NAME, time.perf_counter() - started, None, None, notes=(note,)),
        )
    result = onnx.ModelProto()
    result.CopyFrom(model)
    padded = _rewrite(result, graph, found)
    shifted = shift_ranges(ranges, {c.tensor: c.shift for c in found}, padded)
    note = (
        f"{len(found)} non-negative tensor(s) centred on 0 for the symmetric grid (§Q16.1): "
        + ", ".join(found_tensor.tensor for found_tensor in found[:5])
        + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    )
    report = StepReport(NAME, time.perf_counter() - started, None, None, notes=(note,))
    return result, shifted, report


def _centring(graph: Graph, node: Node, ranges: Ranges) -> Centring | None:
    """The shift of ``node``'s output, when it is a centrable clamp (Q.15.1's conditions)."""
    if node.op_type not in _CLAMPS or len(node.outputs) != 1:
        return None
    bounds = _clamp_bounds(graph, node)
    tensor = node.outputs[0]
    if bounds is None or bounds[0] != 0.0 or tensor not in ranges:
        return None
    if tensor in {info.name for info in graph.outputs}:
        return None
    layer = graph.producer(node.inputs[0])
    if layer is None or not _shifts_by_bias(graph, layer, node.inputs[0]):
        return None
    readers = graph.consumers(tensor)
    if not readers or not all(_reads_as_data(graph, reader, tensor) for reader in readers):
        return None
    selected = ranges[tensor]
    if selected.min < 0.0 or selected.max <= 0.0:
        return None
    shift = _on_bins(selected.max / 2, ranges.histogram(tensor))
    return Centring(tensor, node, layer, tuple(readers), shift)


def _clamp_bounds(graph: Graph, node: Node) -> tuple[float, float] | None:
    if node.op_type == "Relu":
        return 0.0, math.inf
    low, high = attr(node, "min", -math.inf), attr(node, "max", math.inf)
    for index, port in enumerate((1, 2)):
        name = optional_input(node, port)
        if name is None:
            continue
        if name not in graph.initializers or graph.initializers[name].size != 1:
            return None
        value = float(graph.initializers[name].reshape(-1)[0])
        low, high = (value, high) if index == 0 else (low, value)
    return float(low), float(high)


def _shifts_by_bias(graph: Graph, layer: Node, tensor: str) -> bool:
    """``layer`` is a Conv whose output only the clamp reads, with a bias only it reads."""
    if layer.op_type != "Conv" or len(graph.consumers(tensor)) != 1:
        return False
    bias = optional_input(layer, 2)
    return bias is not None and bias in graph.initializers and len(graph.consumers(bias)) == 1


def _reads_as_data(graph: Graph, reader: Node, tensor: str) -> bool:
    """``reader`` is a Conv reading ``tensor`` as data only, with constant weights only it
    reads, its own bias (or none) and explicit padding (no ``auto_pad`` to move)."""
    if reader.op_type != "Conv" or reader.inputs[0] != tensor or tensor in reader.inputs[1:]:
        return False
    if attr(reader, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return False
    bias = optional_input(reader, 2)
    weight = reader.inputs[1]
    if weight not in graph.initializers or len(graph.consumers(weight)) != 1:
        return False
    return bias is None or (bias in graph.initializers and len(graph.consumers(bias)) == 1)


def _pads(reader: Node) -> tuple[int, ...]:
    """The reader's explicit pads; all zero when it has none."""
    return tuple(int(p) for p in attr(reader, "pads", ()))


def _on_bins(shift: float, histogram: Histogram | None) -> float:
    """``shift`` rounded to a whole number of the histogram's bins, so the shifted
    histogram is exact (its bins move, their counts do not)."""
    if histogram is None or histogram.empty:
        return shift
    width = math.ldexp(1.0, histogram.exponent)
    return round(shift / width) * width


def _rewrite(model: onnx.ModelProto, graph: Graph, found: list[Centring]) -> dict[str, str]:
    """Lower each layer's bias by c, move its clamp by −c, raise each reader's bias (Q.15.1);
    returns each Pad output made for a padded reader, with the tensor it pads."""
    protos = {node.name: node for node in model.graph.node}
    tensors = {tensor.name: tensor for tensor in model.graph.initializer}
    replaced: set[str] = set()
    padded_copies: dict[str, str] = {}
    for centring in found:
        replaced.update(name for name in centring.clamp.inputs[1:] if name)
        shift = np.float32(centring.shift)
        bias = tensors[centring.layer.inputs[2]]
        _store(bias, numpy_helper.to_array(bias) - shift)
        _move_clamp(model, protos[centring.clamp.name], graph, centring)
        for reader in centring.readers:
            if any(_pads(reader)):
                padded = _pad_explicitly(model, protos[reader.name], graph, reader, centring)
                padded_copies[padded] = centring.tensor
            weights = graph.initializers[reader.inputs[1]].astype(np.float64)
            raised = centring.shift * weights.reshape(weights.shape[0], -1).sum(axis=1)
            _raise_bias(model, protos[reader.name], tensors, raised)
    # The clamps' old bounds (often one constant every ReLU6 shares) when nothing reads them.
    read = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name not in replaced or t.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return padded_copies


def _move_clamp(
    model: onnx.ModelProto, proto: onnx.NodeProto, graph: Graph, centring: Centring
) -> None:
    """The clamp as Clip(min = −c, max = hi − c), its bounds as new initializers."""
    low, high = _clamp_bounds(graph, centring.clamp) or (0.0, math.inf)
    names = [f"{centring.tensor}_centred_min"]
    values = [np.array(low - centring.shift, np.float32)]
    if math.isfinite(high):
        names.append(f"{centring.tensor}_centred_max")
        values.append(np.array(high - centring.shift, np.float32))
    for name, value in zip(names, values, strict=True):
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    proto.op_type = "Clip"
    del proto.attribute[:]
    del proto.input[1:]
    proto.input.extend(names)


def _pad_explicitly(
    model: onnx.ModelProto, proto: onnx.NodeProto, graph: Graph, reader: Node, centring: Centring
) -> str:
    """The reader's zero padding as a Pad of −c in front of it (zero padding of y is −c
    padding of y'), and the reader unpadded."""
    pads = _pads(reader)
    half = len(pads) // 2
    # Pad's pads: begins of every axis, then ends; batch and channel axes get none.
    pad_values = np.array([0, 0, *pads[:half], 0, 0, *pads[half:]], np.int64)
    base = f"{reader.name}_centred_pad"
    padded = f"{base}_output"
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(pad_values, f"{base}_pads"),
            numpy_helper.from_array(np.array(-centring.shift, np.float32), f"{base}_value"),
        ]
    )
    node = helper.make_node(
        "Pad",
        [centring.tensor, f"{base}_pads", f"{base}_value"],
        [padded],
        name=base,
        mode="constant",
    )
    nodes = list(model.graph.node)
    at = next(i for i, n in enumerate(nodes) if n.name == proto.name)
    model.graph.node.insert(at, node)
    proto.input[0] = padded
    for attribute in proto.attribute:
        if attribute.name == "pads":
            del attribute.ints[:]
            attribute.ints.extend([0] * len(pads))
    model.graph.value_info.append(_padded_info(graph, centring.tensor, padded, pad_values))
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
        _store(bias, (numpy_helper.to_array(bias).astype(np.float64) + raised).astype(np.float32))
        return
    name = f"{proto.name}_centred_bias"
    model.graph.initializer.append(numpy_helper.from_array(raised.astype(np.float32), name))
    tensors[name] = model.graph.initializer[-1]
    while len(proto.input) < 3:
        proto.input.append("")
    proto.input[2] = name


def _store(tensor: onnx.TensorProto, value: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(value.astype(np.float32), tensor.name))


def shift_ranges(
    ranges: Ranges, shifts: dict[str, float], copies: dict[str, str] | None = None
) -> Ranges:
    """``ranges`` with each tensor of ``shifts`` moved by −c: its selected range, its
    extremes and its histogram (exactly, when c is a whole number of bins). Each tensor of
    ``copies`` (a Pad's output) takes the range of the tensor it copies: the Pad writes
    −c, the lower end of that range, and keeps its input's parameters (§Q6)."""
    tensors = dict(ranges.tensors)
    histograms = {name: ranges.histogram(name) for name in ranges}
    for name, shift in shifts.items():
        old = tensors[name]
        tensors[name] = TensorRange(
            old.min - shift, old.max - shift, old.observed_min - shift, old.observed_max - shift
        )
        histograms[name] = _shift_histogram(histograms[name], shift)
    for copy, source in (copies or {}).items():
        tensors[copy] = tensors[source]
        histograms[copy] = histograms[source]
    kept = {name: h for name, h in histograms.items() if h is not None}
    return Ranges(
        ranges.method, tensors, ranges.samples, skipped=ranges.skipped, histograms=kept,
        options=ranges.options,
    )  # fmt: skip


def _shift_histogram(histogram: Histogram | None, shift: float) -> Histogram | None:
    if histogram is None or histogram.empty:
        return histogram
    bins = shift / math.ldexp(1.0, histogram.exponent)
    if bins != round(bins):
        return None  # not a whole number of bins: no exact shifted histogram
    moved = histogram.copy()
    moved.offset -= round(bins)
    moved.min, moved.max = histogram.min - shift, histogram.max - shift
    return moved
