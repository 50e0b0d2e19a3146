"""``smooth_quant``: activation outliers migrated into the next weights (docs/numerics.md §I.11).

SmoothQuant (Xiao et al., ICML 2023): where a LayerNorm's output ``X`` feeds matrix
products, dividing channel ``j`` of ``X`` by ``s_j`` (through the LayerNorm's γ and β) and
multiplying row ``j`` of every reader's weight by it computes the same function, while the
per-tensor activation grid no longer has to span the few outlier channels. The strength
``a`` of ``s_j = max|X_j|^a / max|W_j|^(1-a)`` is chosen per tensor by the readers' output
error on calibration samples; "no smoothing" is one of the choices. The result is a new
float model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from eightbit.calibrate.data import DataLike
from eightbit.graph import Graph, Node
from eightbit.graph.affine_tail import AffineTail, channel_affine_tail
from eightbit.graph.patterns import SMOOTHING_NOTE, float_islands
from eightbit.improve._onnx import ModelEdit
from eightbit.improve.measure import channel_rows, count, read_samples
from eightbit.ops import Contraction, lookup
from eightbit.ops.spec import optional_input
from eightbit.quant import (
    QuantConfig,
    activation_params,
    dequantize_values,
    quantize_values,
    weight_params,
)
from eightbit.steps import StepReport

# Samples whose channel maxima give the scales (the tokens of a few dozen sentences or
# images already cover a LayerNorm's outlier channels).
SAMPLES = 16
# Rows of X the output error (I.17) is measured on: a fixed, evenly spaced subset.
ERROR_ROWS = 1024
STRENGTHS = (0.25, 0.4, 0.5, 0.6, 0.75, 0.85)
# Smoothing is kept when it lowers the error (I.17) by more than this fraction.
MIN_GAIN = 0.02
# Scales are kept within these bounds: a channel that never moves or a zero weight row
# must not turn into an infinite or vanishing scale.
SCALE_BOUNDS = (1e-4, 1e4)


@dataclass(frozen=True)
class Reader:
    """A matrix product reading ``X``: ``node``'s constant ``weight`` has ``X``'s channels
    on ``in_axis`` and its outputs on ``out_axis``."""

    node: str
    port: int
    weight: str
    in_axis: int
    out_axis: int


@dataclass(frozen=True)
class Group:
    """A tensor ``X``, its matrix-product readers, and the nodes that read it otherwise.

    ``tail``: the affine tail that absorbs ``1/s`` (``others`` then get ``X`` back through
    a Mul); None when ``X`` comes out of a float unit (a GELU, §Q12) and a Mul by ``1/s``
    is written before the readers instead (``others`` keep reading ``X``).
    """

    tensor: str
    channels: int
    tail: AffineTail | None
    readers: tuple[Reader, ...]
    others: tuple[str, ...]

    @property
    def compensated(self) -> int:
        """How many readers read ``X`` back through the Mul by ``s`` (I.17's second sum)."""
        return len(self.others) if self.tail is not None else 0


def find_groups(graph: Graph) -> list[Group]:
    """Every tensor SmoothQuant can smooth: an affine tail read by at least one matrix
    product with a constant 2-D weight."""
    outputs = {info.name for info in graph.outputs}
    islands = float_islands(graph)
    groups = []
    for node in graph.nodes:
        for tensor in node.outputs:
            group = _group(graph, tensor, islands) if tensor and tensor not in outputs else None
            if group is not None:
                groups.append(group)
    return groups


def _group(graph: Graph, tensor: str, islands: Mapping[str, str]) -> Group | None:
    info = graph.info(tensor)
    if info is None or not info.is_float or not info.shape:
        return None
    channels = info.shape[-1]
    if not isinstance(channels, int) or channels < 2:
        return None
    readers: list[Reader] = []
    others: list[str] = []
    for node in graph.consumers(tensor):
        reader = _reader(graph, node, tensor, channels)
        if reader is not None:
            readers.append(reader)
        else:
            others.append(node.name)
    if not readers:
        return None
    tail = channel_affine_tail(graph, tensor, channels)
    producer = graph.producer(tensor)
    if tail is None and (producer is None or producer.name not in islands):
        return None  # a Mul here would be a new float op between int8 nodes
    return Group(tensor, channels, tail, tuple(readers), tuple(others))


def _reader(graph: Graph, node: Node, tensor: str, channels: int) -> Reader | None:
    """``node`` as a matrix product reading ``tensor`` as its data, with a constant 2-D
    float weight of ``channels`` input rows that only it reads."""
    spec = lookup(node.op_type, node.domain)
    if spec is None or spec.contraction is not Contraction.MATRIX or spec.weight_port is None:
        return None
    if spec.weight_layout is None or spec.reason_not_quantized(node, graph) is not None:
        return None
    weight = optional_input(node, spec.weight_port)
    if node.inputs[0] != tensor or list(node.inputs).count(tensor) != 1 or weight is None:
        return None
    if weight not in graph.initializers or len(graph.consumers(weight)) != 1:
        return None
    value = graph.initializers[weight]
    if value.ndim != 2 or value.dtype.kind != "f":
        return None
    layout = spec.weight_layout(node.attrs, tuple(value.shape))
    if layout is None or value.shape[layout.in_axis] != channels:
        return None
    return Reader(node.name, spec.weight_port, weight, layout.in_axis, layout.out_axis)


def smooth_quant(
    model: onnx.ModelProto,
    data: DataLike,
    config: QuantConfig | None = None,
    *,
    samples: int = SAMPLES,
    threads: int | None = None,
    tails_only: bool = False,
) -> tuple[onnx.ModelProto, StepReport | None]:
    """A smoothed copy of the normalized float ``model`` and what was done; ``(model,
    None)`` when it has no tensor to smooth (nothing is copied or reported).

    ``tails_only``: smooth only tensors whose producer's affine tail absorbs ``1/s``
    (a LayerNorm's γ and β), never by a Mul written before the readers (dynamic mode,
    §D.9: a Mul would be one more pass over the tensor at run time)."""
    started = time.perf_counter()
    config = config or QuantConfig()
    graph = Graph(model)
    groups = find_groups(graph)
    if tails_only:
        groups = [group for group in groups if group.tail is not None]
    if not groups:
        return model, None
    batches = read_samples(data, graph, samples)
    observed = _observe(model, groups, batches, threads)
    chosen: list[tuple[Group, np.ndarray, float]] = []
    notes = []
    for group in groups:
        weights = [np.asarray(graph.initializers[r.weight], np.float64) for r in group.readers]
        strength, scales, gain = choose_strength(observed[group.tensor], group, weights, config)
        if scales is not None:
            chosen.append((group, scales, strength))
            notes.append(f"{group.tensor}: a = {strength:g}, error (I.17) x{gain:.3f}")
    result = _write(model, graph, chosen) if chosen else model
    summary = (
        f"{len(chosen)} of {len(groups)} LayerNorm or float-unit output(s) feeding matrix "
        "products smoothed "
        f"(strength per tensor from {list(STRENGTHS)} or none), on {count(batches)} "
        "calibration samples"
    )
    report = StepReport(
        "smooth_quant", time.perf_counter() - started, None, None, notes=(summary, *notes)
    )
    return result, report


def _observe(
    model: onnx.ModelProto,
    groups: Sequence[Group],
    batches: Sequence[dict[str, np.ndarray]],
    threads: int | None,
) -> dict[str, np.ndarray]:
    """Each group's tensor on the batches, as rows of its channels (float64)."""
    names = [group.tensor for group in groups]
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for name, rows in channel_rows(model, names, batches, threads):
        collected[name].append(rows)
    return {name: np.concatenate(parts).astype(np.float64) for name, parts in collected.items()}


def migration_scales(x_max: np.ndarray, w_max: np.ndarray, strength: float) -> np.ndarray:
    """``s_j = max|X_j|^a / max|W_j|^(1-a)`` (I.16), 1 where either maximum is 0."""
    valid = (x_max > 0) & (w_max > 0)
    safe_x = np.where(valid, x_max, 1.0)
    safe_w = np.where(valid, w_max, 1.0)
    scales = np.where(valid, safe_x**strength / safe_w ** (1.0 - strength), 1.0)
    return np.clip(scales, *SCALE_BOUNDS)


def choose_strength(
    rows: np.ndarray, group: Group, weights: Sequence[np.ndarray], config: QuantConfig
) -> tuple[float, np.ndarray | None, float]:
    """The strength whose scales give the least error (I.17), the scales (None: leave
    the tensor as it is) and the error's ratio to no smoothing's."""
    x_max = np.max(np.abs(rows), axis=0)
    mats = [_as_rows_by_outputs(w, r) for w, r in zip(weights, group.readers, strict=True)]
    w_max = np.max([np.max(np.abs(m), axis=1) for m in mats], axis=0)
    sample = rows[np.linspace(0, len(rows) - 1, min(len(rows), ERROR_ROWS)).astype(int)]
    references = [sample @ m for m in mats]
    compensated = group.compensated
    unsmoothed = _error(sample, np.ones(group.channels), mats, references, compensated, config)
    best: tuple[float, np.ndarray | None, float] = (0.0, None, unsmoothed)
    for strength in STRENGTHS:
        scales = migration_scales(x_max, w_max, strength)
        error = _error(sample, scales, mats, references, compensated, config)
        if error < best[2]:
            best = (strength, scales, error)
    strength, chosen, error = best
    if chosen is None or error > unsmoothed * (1.0 - MIN_GAIN):
        return 0.0, None, 1.0
    return strength, chosen, error / unsmoothed


def _as_rows_by_outputs(weight: np.ndarray, reader: Reader) -> np.ndarray:
    """The weight as ``[C, N]`` (input channels by outputs)."""
    return weight if reader.in_axis == 0 else weight.T


def _error(
    rows: np.ndarray,
    scales: np.ndarray,
    mats: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    compensated: int,
    config: QuantConfig,
) -> float:
    """E(s) of (I.17): the readers' relative output errors, and ``compensated`` times the
    relative error of ``X`` read back through the Mul."""
    smoothed = rows / scales
    params = activation_params(float(smoothed.min()), float(smoothed.max()), config)
    restored = dequantize_values(quantize_values(smoothed, params), params).astype(np.float64)
    total = 0.0
    for mat, reference in zip(mats, references, strict=True):
        scaled = mat * scales[:, None]
        w_params = weight_params(scaled, 1 if config.per_channel else None, config)
        w_restored = dequantize_values(quantize_values(scaled, w_params), w_params)
        total += _relative(reference, restored @ w_restored.astype(np.float64))
    if compensated:
        total += compensated * _relative(rows, restored * scales)
    return total


def _relative(reference: np.ndarray, value: np.ndarray) -> float:
    signal = float(np.sum(reference**2))
    return float(np.sum((reference - value) ** 2)) / signal if signal > 0 else 0.0


def _write(
    model: onnx.ModelProto, graph: Graph, chosen: Sequence[tuple[Group, np.ndarray, float]]
) -> onnx.ModelProto:
    """The model with γ, β divided and the readers' weight rows multiplied by the scales;
    ``X`` renamed ``X_smoothed`` for the matrix products, and the original ``X`` computed
    back by a Mul for every other reader."""
    edit = ModelEdit(model)
    for group, scales, _ in chosen:
        tail = group.tail
        for port in (tail.scale, tail.bias) if tail is not None else ():
            if port is None:
                continue
            value = edit.value(port.node, port.port)
            assert value is not None  # channel_affine_tail found a constant there
            edit.set(port.node, port.port, (value / scales).astype(value.dtype), port.node)
        for reader in group.readers:
            weight = np.asarray(graph.initializers[reader.weight])
            shape = [1, 1]
            shape[reader.in_axis] = group.channels
            new = (weight * scales.reshape(shape)).astype(weight.dtype)
            edit.set(reader.node, reader.port, new, reader.weight)
    proto = edit.model
    for group, scales, _ in chosen:
        _rewire(proto, group, scales)
    return proto


def _rewire(model: onnx.ModelProto, group: Group, scales: np.ndarray) -> None:
    """The matrix products read ``X_smoothed``. With a tail, its producer writes it and a
    Mul by ``s`` gives the other readers ``X`` under its own name; without, a Mul by ``1/s``
    computes it from ``X``. Either way nothing else in the graph changes."""
    names = {t.name for t in model.graph.initializer} | {
        name for node in model.graph.node for name in (*node.output, node.name)
    }
    smoothed = _fresh(f"{group.tensor}_smoothed", names)
    readers = {reader.node for reader in group.readers}
    position = 0
    for index, node in enumerate(model.graph.node):
        if group.tensor in node.output:
            if group.tail is not None:
                node.output[list(node.output).index(group.tensor)] = smoothed
            position = index + 1
        elif node.name in readers:
            node.input[list(node.input).index(group.tensor)] = smoothed
    declared = next((v for v in model.graph.value_info if v.name == group.tensor), None)
    if declared is not None:  # X_smoothed has X's type and shape
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(declared)
        copy.name = smoothed
        model.graph.value_info.append(copy)
    if group.tail is not None and not group.others:
        return
    if group.tail is None:
        factors, inputs, outputs, role = 1.0 / scales, group.tensor, smoothed, "smooth"
    else:
        factors, inputs, outputs, role = scales, smoothed, group.tensor, "unsmooth"
    factor_name = _fresh(f"{group.tensor}_{role}_scales", names)
    model.graph.initializer.append(
        onnx.numpy_helper.from_array(factors.astype(np.float32), factor_name)
    )
    mul = helper.make_node(
        "Mul", [inputs, factor_name], [outputs], name=_fresh(f"{group.tensor}_{role}", names)
    )
    mul.doc_string = f"{SMOOTHING_NOTE}: X/s for the matrix products, or X back for the rest"
    model.graph.node.insert(position, mul)


def _fresh(base: str, taken: set[str]) -> str:
    name, index = base, 1
    while name in taken:
        name, index = f"{base}_{index}", index + 1
    taken.add(name)
    return name
