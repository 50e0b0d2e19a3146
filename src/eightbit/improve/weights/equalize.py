"""``equalize``: cross-layer equalization and high-bias absorption (docs/numerics.md §I.2).

Two weighted layers joined by a positively homogeneous activation, ``L1 -> f -> L2`` with
``f(x/s) = f(x)/s`` for ``s > 0`` (Relu, LeakyRelu, nothing; Clip with its bound handled
by §I.2.3), compute the same function when output channel ``i`` of L1 is divided by
``s_i`` and the weights of L2 that read channel ``i`` are multiplied by it. The scales:

- per-channel weights (the default): only pairs whose L2 keeps channels apart (depthwise
  convolutions: each input channel is read by its own output channels) are scaled, with
  ``s_i = a_i / max_j a_j`` (``a_i`` the largest magnitude channel ``i`` takes on the data):
  the shared per-tensor grid of the activation then serves every channel in full, while
  per-channel weight scales make both layers' weight quantization exactly invariant (§I.2.1);
- per-tensor weights: Nagel et al. (2019) ``s_i = sqrt(r1_i / r2_i)``, which equalizes
  the weight ranges of both layers channel by channel, iterated over chains (§I.2.2).

Then high-bias absorption moves, for channels a Relu never clips on the data, the part of
the bias that is always present into L2's bias (§I.2.4). The result is a new float model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from eightbit.calibrate.data import DataLike
from eightbit.graph import Graph, Node
from eightbit.improve._onnx import ModelEdit, Reduction
from eightbit.improve.measure import count, read_samples, run_reductions
from eightbit.ops import Contraction, OpSpec, lookup
from eightbit.ops.spec import optional_input
from eightbit.quant import QuantConfig, dequantize_values, quantize_values, weight_params
from eightbit.steps import LayerGain, StepReport

# Channel ranges for the scales; 16 images already cover them (more gave the same accuracy
# on MobileNetV2 at several times the cost: benchmarks/RESULTS.md#numerics-i1).
DEFAULT_SAMPLES = 16
MAX_ROUNDS = 8
# Rounds stop when no scale moves by more than this factor (|log s| < 1e-3).
CONVERGED = 1e-3
# A channel is scaled up by at most this much: below 1/1000 of the widest channel it
# already rounds to zero and more resolution buys nothing, while its L1 weights would grow.
MIN_SCALE = 1e-3
# The layers whose channels the scales move: convolutions and matrix products, whose weight
# holds each group's outputs together (a transposed convolution holds each group's inputs).
_EQUALIZED = (Contraction.CONVOLUTION, Contraction.MATRIX)


@dataclass(frozen=True)
class Pair:
    """``first -> activation -> second``: ``second`` reads ``tensor`` (``channels`` wide).

    ``depthwise``: each of ``second``'s output channels reads one input channel, so
    per-channel weight quantization of ``second`` does not see the scaling.
    ``clip``: the activation's upper bound, when it has one.
    """

    first: Node
    activation: Node | None
    second: Node
    tensor: str
    channels: int
    rank: int
    depthwise: bool
    clip: float | None


def find_pairs(graph: Graph) -> tuple[list[Pair], dict[str, int]]:
    """Every pair that can be equalized, and how many were passed over, by reason."""
    pairs: list[Pair] = []
    skipped: dict[str, int] = {}
    outputs = {info.name for info in graph.outputs}
    for first in graph.nodes:
        if _weight_layout(graph, first) is None:
            continue
        found = _pair_from(graph, first, outputs)
        if isinstance(found, Pair):
            pairs.append(found)
        elif found is not None:
            skipped[found] = skipped.get(found, 0) + 1
    return pairs, skipped


def equalize(
    model: onnx.ModelProto,
    data: DataLike | None = None,
    config: QuantConfig | None = None,
    *,
    samples: int = DEFAULT_SAMPLES,
    absorb: bool = True,
    threads: int | None = None,
) -> tuple[onnx.ModelProto, StepReport]:
    """An equalized copy of the normalized float ``model`` and what was done.

    ``data`` (calibration samples; the first ``samples`` are read) gives the channel
    ranges that per-channel equalization, Clip-bounded pairs and absorption need; without
    it only per-tensor weight equalization of unbounded pairs runs. The copy computes the
    same function as ``model`` on every input whose channels stay within the ranges seen
    on ``data`` (exactly, for pairs without a Clip).
    """
    started = time.perf_counter()
    config = config or QuantConfig()
    graph = Graph(model)
    pairs, skipped = find_pairs(graph)
    notes: list[str] = []
    if config.per_channel:
        chosen = [p for p in pairs if p.depthwise]
        passed = len(pairs) - len(chosen)
        if passed:
            notes.append(
                f"{passed} pair(s) into channel-mixing layers left as they are: with "
                "per-channel weights, scaling there trades activation for weight error (§I.2.1)"
            )
    else:
        chosen = list(pairs)
    ranges: Mapping[str, np.ndarray] = {}
    minima: Mapping[str, np.ndarray] = {}
    if chosen and data is not None:
        ranges, minima, seen = _observe(model, graph, chosen, data, samples, threads)
        notes.append(f"channel ranges from {seen} calibration samples")
    elif chosen:
        needs_data = [p for p in chosen if config.per_channel or p.clip is not None]
        if needs_data:
            notes.append(f"{len(needs_data)} pair(s) need calibration data; none was given")
        chosen = [p for p in chosen if p not in needs_data]
    state = _State(graph, chosen, ranges)
    rounds = _equalize_rounds(state, chosen, config.per_channel)
    absorbed = _absorb(state, chosen, minima) if absorb and minima else 0
    # Nothing scaled: the model itself, not a copy of its weights (VGG-16: 528 MB; and the
    # quick check may then read calibration's pass of it, §C.10.3).
    result = _write(model, state, chosen) if state.touched or state.clips else model
    notes.insert(0, _summary(chosen, rounds, absorbed))
    notes.extend(f"{n} pair(s) skipped: {reason}" for reason, n in sorted(skipped.items()))
    report = StepReport(
        name="equalize",
        seconds=time.perf_counter() - started,
        before_db=None,
        after_db=None,
        layers=tuple(_weight_gains(graph, state, config)),
        notes=tuple(notes),
    )
    return result, report


# --- pairs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Where a layer keeps its weight's output and input channels."""

    weight: str
    bias: str | None
    out_axis: int  # axis of the weight indexed by output channel
    groups: int  # Conv groups (1 for Gemm)
    in_axis: int  # axis indexed by the input channel (within its group)
    contraction: Contraction
    weight_port: int
    bias_port: int


def _shape(graph: Graph, constant: str) -> tuple[int, ...]:
    """A constant's shape from its proto: a big weight is not converted to read it."""
    info = graph.info(constant)
    if info is not None and info.shape is not None:
        return tuple(int(d) for d in info.shape)  # type: ignore[arg-type]
    return tuple(graph.initializers[constant].shape)


def _dtype(graph: Graph, constant: str) -> np.dtype:
    info = graph.info(constant)
    return info.dtype if info is not None else graph.initializers[constant].dtype


def _weight_layout(graph: Graph, node: Node) -> _Layout | None:
    """The layout of a Conv or Gemm whose weight and bias are constants only it reads."""
    spec = _equalized_layer(graph, node)
    if spec is None or spec.weight_port is None or spec.bias_port is None:
        return None
    assert spec.contraction is not None and spec.weight_layout is not None
    weight = optional_input(node, spec.weight_port) or ""
    bias = optional_input(node, spec.bias_port)
    if weight not in graph.initializers:
        return None
    layout = spec.weight_layout(node.attrs, _shape(graph, weight))
    if layout is None:
        return None
    for name in (weight, bias):
        if name is None:
            continue
        if name not in graph.initializers or len(graph.consumers(name)) != 1:
            return None
        if _dtype(graph, name).kind != "f":
            return None
    if bias is not None and len(_shape(graph, bias)) != 1:
        return None
    return _Layout(
        weight,
        bias,
        layout.out_axis,
        layout.groups,
        layout.in_axis,
        spec.contraction,
        spec.weight_port,
        spec.bias_port,
    )


def _equalized_layer(graph: Graph, node: Node) -> OpSpec | None:
    """The spec of a convolution or matrix product with a bias port that the quantizer
    would not keep in float for its attributes (Gemm's transA, alpha, beta)."""
    spec = lookup(node.op_type, node.domain)
    if spec is None or spec.contraction not in _EQUALIZED or spec.bias_port is None:
        return None
    return spec if spec.reason_not_quantized(node, graph) is None else None


def _pair_from(graph: Graph, first: Node, outputs: set[str]) -> Pair | str | None:
    """The pair that starts at ``first``; a reason when one almost does; else None."""
    produced = first.outputs[0]
    readers = graph.consumers(produced)
    if len(readers) != 1 or produced in outputs:
        return None
    activation: Node | None = None
    tensor = produced
    if _is_homogeneous(readers[0]):
        activation = readers[0]
        tensor = activation.outputs[0]
        readers = graph.consumers(tensor)
        if len(readers) != 1 or tensor in outputs:
            return None
    second = readers[0]
    layout = _weight_layout(graph, second)
    if layout is None or second.inputs[0] != tensor or list(second.inputs).count(tensor) != 1:
        return None
    clip = None
    if activation is not None and _is_clamp(activation):
        bounds = _clamp_bounds(graph, activation)
        if bounds is None:
            return "Clip bounds are not constants"
        low, clip = bounds
        if low not in (0.0, -math.inf) or not clip > 0:
            return "Clip is not [0, max] (only a lower bound of 0 is scale invariant)"
        clip = None if math.isinf(clip) else clip
    info = graph.info(tensor)
    if info is None or info.shape is None:
        return "the shape of the tensor between the layers is unknown"
    channels = info.shape[1] if len(info.shape) > 1 else None
    first_layout = _must(_weight_layout(graph, first))
    first_shape = _shape(graph, first_layout.weight)
    if not isinstance(channels, int) or first_shape[first_layout.out_axis] != channels:
        return "the layers' channel counts do not match"
    in_per_group = _shape(graph, layout.weight)[layout.in_axis]
    if in_per_group * layout.groups != channels:
        return "the layers' channel counts do not match"
    return Pair(
        first=first,
        activation=activation,
        second=second,
        tensor=tensor,
        channels=channels,
        rank=len(info.shape),
        depthwise=layout.contraction is Contraction.CONVOLUTION
        and in_per_group == 1
        and channels > 1,
        clip=clip,
    )


def _is_homogeneous(node: Node) -> bool:
    spec = lookup(node.op_type, node.domain)
    return spec is not None and spec.homogeneous


def _is_clamp(node: Node) -> bool:
    spec = lookup(node.op_type, node.domain)
    return spec is not None and spec.clamp is not None


def _clamp_bounds(graph: Graph, node: Node) -> tuple[float, float] | None:
    """A clamp's [min, max] when both are constants (the op spec's reading of them)."""
    spec = lookup(node.op_type, node.domain)
    return None if spec is None else spec.clamp_bounds(node, graph)


def _must(layout: _Layout | None) -> _Layout:
    assert layout is not None
    return layout


# --- data --------------------------------------------------------------------------------


def _observe(
    model: onnx.ModelProto,
    graph: Graph,
    pairs: Sequence[Pair],
    data: DataLike,
    samples: int,
    threads: int | None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Per pair: the largest |value| of each channel L2 reads, and the least value of
    each channel L1 writes (for absorption)."""
    batches = read_samples(data, graph, samples)
    reductions = []
    for pair in pairs:
        reductions.append(Reduction(pair.tensor, "max_abs", 1, pair.rank))
        reductions.append(Reduction(pair.first.outputs[0], "min", 1, pair.rank))
    totals = run_reductions(model, reductions, batches, threads)
    ranges = {p.first.name: totals[p.tensor + "|max_abs"] for p in pairs}
    minima = {p.first.name: totals[p.first.outputs[0] + "|min"] for p in pairs}
    return ranges, minima, count(batches)


# --- scales ------------------------------------------------------------------------------


class _State:
    """Weights, biases, clip bounds and channel ranges as the rounds change them (float64)."""

    def __init__(self, graph: Graph, pairs: Sequence[Pair], ranges: Mapping[str, np.ndarray]):
        self.layouts: dict[str, _Layout] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.biases: dict[str, np.ndarray] = {}
        for pair in pairs:
            for node in (pair.first, pair.second):
                layout = _must(_weight_layout(graph, node))
                self.layouts[node.name] = layout
                self.weights[node.name] = np.array(graph.initializers[layout.weight], np.float64)
                if layout.bias is not None:
                    self.biases[node.name] = np.array(graph.initializers[layout.bias], np.float64)
        self.ranges = {name: np.asarray(r, np.float64) for name, r in ranges.items()}
        self.clips: dict[str, float] = {}  # activation node -> new upper bound
        self.total: dict[str, np.ndarray] = {}  # first node -> product of its scales
        self.touched: set[str] = set()

    def output_ranges(self, node: str) -> np.ndarray:
        """r1: the largest |weight| of each output channel of ``node``."""
        weight = np.moveaxis(self.weights[node], self.layouts[node].out_axis, 0)
        return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)

    def input_ranges(self, node: str) -> np.ndarray:
        """r2: the largest |weight| reading each input channel of ``node``."""
        return np.abs(self.by_input(node, self.weights[node])).max(axis=(1, 3)).reshape(-1)

    def scale(self, pair: Pair, scales: np.ndarray) -> None:
        """Divide output channel i of ``first`` by s_i; multiply what ``second`` reads of it."""
        first, second = pair.first.name, pair.second.name
        out_axis = self.layouts[first].out_axis
        shape = [1] * self.weights[first].ndim
        shape[out_axis] = scales.size
        self.weights[first] = self.weights[first] / scales.reshape(shape)
        if first in self.biases:
            self.biases[first] = self.biases[first] / scales
        grouped = self.by_input(second, self.weights[second])
        layout = self.layouts[second]
        scaled = grouped * scales.reshape(layout.groups, 1, -1, 1)
        self.weights[second] = self.from_input(second, scaled)
        if first in self.ranges:
            self.ranges[first] = self.ranges[first] / scales
        self.total[first] = self.total.get(first, 1.0) * scales
        self.touched.update((first, second))

    def by_input(self, node: str, weight: np.ndarray) -> np.ndarray:
        """The weight as [groups, outputs per group, inputs per group, everything else]."""
        layout = self.layouts[node]
        moved = np.moveaxis(weight, (layout.out_axis, layout.in_axis), (0, 1))
        outputs, inputs = moved.shape[:2]
        return moved.reshape(layout.groups, outputs // layout.groups, inputs, -1)

    def from_input(self, node: str, grouped: np.ndarray) -> np.ndarray:
        layout = self.layouts[node]
        original = self.weights[node].shape
        moved_shape = np.moveaxis(
            np.empty(original, np.int8), (layout.out_axis, layout.in_axis), (0, 1)
        ).shape
        moved = grouped.reshape(moved_shape)
        return np.moveaxis(moved, (0, 1), (layout.out_axis, layout.in_axis))


def depthwise_scales(ranges: np.ndarray) -> np.ndarray:
    """(I.2.1) ``s_i = a_i / max a``, at least MIN_SCALE; 1 for channels that stay at 0."""
    widest = float(ranges.max()) if ranges.size else 0.0
    if widest <= 0.0:
        return np.ones_like(ranges)
    scales = np.maximum(ranges / widest, MIN_SCALE)
    return np.where(ranges > 0, scales, 1.0)


def nagel_scales(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(I.2.2) ``s_i = sqrt(r1_i / r2_i)``; 1 where either range is 0."""
    usable = (first > 0) & (second > 0)
    ratio = np.where(usable, first / np.where(second > 0, second, 1.0), 1.0)
    return np.where(usable, np.sqrt(ratio), 1.0)


def respect_clip(scales: np.ndarray, ranges: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """(I.2.3) Scales that keep every channel's observed range below the one shared bound.

    The Clip's bound becomes ``bound / max s``, which is at most each channel's exact
    bound ``bound / s_i``; a channel whose observed values would reach past it is scaled
    less: ``s_i >= a_i · max s / bound``.
    """
    largest = float(scales.max())
    kept = np.maximum(scales, ranges * largest / bound)
    return kept, bound / float(kept.max())


def _equalize_rounds(state: _State, pairs: Sequence[Pair], per_channel: bool) -> int:
    """Scale every pair, repeatedly until the scales settle; return the rounds run."""
    if not pairs:
        return 0
    for round_index in range(1, MAX_ROUNDS + 1):
        moved = 0.0
        for pair in pairs:
            name = pair.first.name
            if per_channel:
                scales = depthwise_scales(state.ranges[name])
            else:
                first, second = state.output_ranges(name), state.input_ranges(pair.second.name)
                scales = nagel_scales(first, second)
            if pair.clip is not None:
                assert pair.activation is not None
                bound = state.clips.get(pair.activation.name, pair.clip)
                scales, new_bound = respect_clip(scales, state.ranges[name], bound)
                state.clips[pair.activation.name] = new_bound
            state.scale(pair, scales)
            moved = max(moved, float(np.max(np.abs(np.log(scales)))))
        if moved < CONVERGED:
            return round_index
    return MAX_ROUNDS


# --- high-bias absorption ----------------------------------------------------------------


def _absorb(state: _State, pairs: Sequence[Pair], minima: Mapping[str, np.ndarray]) -> int:
    """(I.2.4) Move ``c_i = min x_i > 0`` of Relu-joined channels into L2's bias."""
    absorbed = 0
    for pair in pairs:
        first, second = pair.first.name, pair.second.name
        # Absorption needs f(x - c) = f(x) - c for x >= c > 0: no activation, or a clamp
        # without an upper bound (Relu).
        unbounded = pair.activation is None or (_is_clamp(pair.activation) and pair.clip is None)
        layout = state.layouts[second]
        if not unbounded or first not in state.biases or not _padding_free(pair.second, state):
            continue
        # Minima were observed before scaling; the scaled channel is x_i / s_i.
        scaled = minima[first] / state.total.get(first, 1.0)
        shift = np.where(scaled > 0, scaled, 0.0)
        if not np.any(shift > 0):
            continue
        grouped = state.by_input(second, state.weights[second])
        per_input = grouped.sum(axis=3)  # [groups, outputs per group, inputs per group]
        moved = np.einsum("goi,gi->go", per_input, shift.reshape(layout.groups, -1)).reshape(-1)
        state.biases[first] = state.biases[first] - shift
        state.biases[second] = state.biases.get(second, np.zeros(moved.size)) + moved
        state.touched.update((first, second))
        absorbed += int(np.count_nonzero(shift))
    return absorbed


def _padding_free(node: Node, state: _State) -> bool:
    """Every output reads only real inputs: a bias added to L2 is then exact everywhere."""
    spec = lookup(node.op_type, node.domain)
    if spec is None or spec.window is None:
        return True  # no window: a matrix product reads whole rows
    return spec.window(node.attrs, state.weights[node.name].shape).padding_free


# --- result ------------------------------------------------------------------------------


def _write(model: onnx.ModelProto, state: _State, pairs: Sequence[Pair]) -> onnx.ModelProto:
    """The edited model. The tensors between scaled layers are renamed: they now differ
    from the original model's channel by channel, and tools that match tensors by name
    (validation, the report) must not compare them with the original ones."""
    edit = ModelEdit(model)
    for pair in pairs:
        if pair.first.name in state.touched:
            for tensor in dict.fromkeys((pair.first.outputs[0], pair.tensor)):
                edit.rename(tensor, f"{tensor}_equalized")
    for name in sorted(state.touched):
        layout = state.layouts[name]
        dtype = np.asarray(edit.value(name, layout.weight_port)).dtype
        edit.set(name, layout.weight_port, state.weights[name].astype(dtype), layout.weight)
        if name in state.biases:
            edit.set(name, layout.bias_port, state.biases[name].astype(dtype), f"{name}_bias")
    clamps = {p.activation.name: p.activation for p in pairs if p.activation is not None}
    for activation, bound in state.clips.items():
        spec = lookup(clamps[activation].op_type, clamps[activation].domain)
        assert spec is not None and spec.clamp_max_port is not None  # only clamps have clips
        value = np.asarray(bound, np.float32)
        edit.set(activation, spec.clamp_max_port, value, f"{activation}_max")
    return edit.model


def _summary(pairs: Sequence[Pair], rounds: int, absorbed: int) -> str:
    if not pairs:
        return "nothing to equalize"
    depthwise = sum(p.depthwise for p in pairs)
    clipped = sum(p.clip is not None for p in pairs)
    text = (
        f"{len(pairs)} pair(s) equalized ({depthwise} into depthwise layers, "
        f"{clipped} through a Clip) in {rounds} round(s)"
    )
    return text + (f"; {absorbed} channel bias(es) absorbed" if absorbed else "")


def _weight_gains(graph: Graph, state: _State, config: QuantConfig) -> list[LayerGain]:
    """Weight quantization SQNR of each changed layer, where it moved by 0.01 dB or more."""
    gains = []
    for name in sorted(state.touched):
        layout = state.layouts[name]
        before = _weight_sqnr(np.asarray(graph.initializers[layout.weight]), layout, config)
        after = _weight_sqnr(state.weights[name], layout, config)
        if abs(after - before) >= 0.01:
            gains.append(LayerGain(name, before, after))
    return gains


def _weight_sqnr(weight: np.ndarray, layout: _Layout, config: QuantConfig) -> float:
    params = weight_params(weight, layout.out_axis if config.per_channel else None, config)
    restored = dequantize_values(quantize_values(weight, params), params).astype(np.float64)
    noise = float(np.sum((restored - weight) ** 2))
    signal = float(np.sum(np.asarray(weight, np.float64) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal else -math.inf
