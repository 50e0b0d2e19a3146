"""``reconstruct``: layer-wise reconstruction of the quantized weights (docs/numerics.md §I.8).

For each quantized Conv, Gemm and MatMul with a constant weight, in topological order, the
step reads input rows as the quantized network computes them (the QDQ model of the layers
reconstructed so far) and the float layer's outputs on the float network's input at the
same positions, drops the rows the float weights miss worst (clipped outliers the network
does not care about, eq. I.10), solves damped least squares for the weights and the bias
(eq. I.11), rounds onto the plan's grid with GPTQ's error feedback (eq. I.12), and keeps
the result where it beats nearest rounding on the rows (eq. I.13). No PyTorch: numpy, and
ONNX Runtime to read the rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from eightbit.calibrate.data import Batch, DataLike
from eightbit.errors import ConfigError
from eightbit.export import to_qdq
from eightbit.graph import Graph, exposing_session
from eightbit.graph.subgraph import has_subgraphs
from eightbit.improve._onnx import ModelEdit
from eightbit.improve.measure import read_samples
from eightbit.improve.progress import layer_progress
from eightbit.improve.weights.adaround_rows import LayerShape, group_bounds, stored_weights
from eightbit.improve.weights.frontier import Frontier
from eightbit.improve.weights.layerwise import (
    output_sqnr,
    quantized_reader,
    weight_layers,
)
from eightbit.improve.weights.reconstruct_layer import (
    LayerGrid,
    LayerSums,
    blas_threads_for,
    solve_layer,
    trimmed,
)
from eightbit.ops import lookup
from eightbit.plan import QuantPlan
from eightbit.steps import LayerGain, StepReport
from eightbit.validators import is_real, require_int, require_positive

__all__ = ["MAX_WIDTH", "ReconstructOptions", "reconstruct", "width"]

# Samples per float-network run: every layer's output of a batch is held at once.
_FLOAT_BATCH = 8

# The widest layer reconstructed, in inputs per output channel (§I.8.2): a 3x3 convolution
# of 512 channels (ResNet's and VGG's widest) still is; CREPE's 128 x 64 taps are not.
MAX_WIDTH = 4608


@dataclass(frozen=True)
class ReconstructOptions:
    """How layer-wise reconstruction samples and regularizes (docs/numerics.md §I.8).

    - ``samples``: calibration samples read (the first ones);
    - ``rows_per_sample``: output positions drawn per sample for a Conv (seeded);
    - ``damping``: δ of eq. I.11, the pull toward the float weights, relative to the
      mean input energy (4: the plateau of δ = 4-16 on MobileNetV2, §I.8);
    - ``keep``: share of rows kept per group by eq. I.10 (1.0 keeps every row);
    - ``seed``: the positions drawn, so a run repeats exactly;
    - ``max_width``: the most inputs per output channel (K) of a layer reconstructed; a
      wider one keeps nearest rounding (§I.8.2: its O(K³) solve costs more than it gains).
    """

    samples: int = 128
    rows_per_sample: int = 128
    damping: float = 4.0
    keep: float = 0.9
    seed: int = 0
    max_width: int = MAX_WIDTH

    def __post_init__(self) -> None:
        for name in ("samples", "rows_per_sample", "max_width"):
            require_int(name, getattr(self, name), 1)
        require_positive("damping", self.damping)
        if not (is_real(self.keep) and 0.0 < self.keep <= 1.0):
            raise ConfigError(f"'keep' must be a share in (0, 1] (got {self.keep!r})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"'seed' must be an integer (got {self.seed!r})")


def reconstruct(
    model: onnx.ModelProto,
    plan: QuantPlan,
    data: DataLike,
    options: ReconstructOptions | None = None,
    *,
    threads: int | None = None,
    progress: bool = False,
) -> tuple[onnx.ModelProto, StepReport]:
    """A copy of the normalized float ``model`` with reconstructed weights and biases.

    ``plan`` is the plan of ``model`` (its weight scales are kept: every channel's largest
    weight keeps its integer, R.2); ``data`` calibration samples. The report gives, per
    layer, the row SQNR with nearest rounding and after (never lower), and the first
    output's SQNR on the same samples before and after. ``progress``: a bar in layers on
    stderr.
    """
    options = ReconstructOptions() if options is None else options
    if not isinstance(options, ReconstructOptions):
        raise ConfigError(f"'options' must be ReconstructOptions (got {type(options).__name__})")
    started = time.perf_counter()
    graph = Graph(model)
    batches = _split(read_samples(data, graph, options.samples), _FLOAT_BATCH)
    every_layer, skipped = weight_layers(graph, plan)
    rows, floats = _float_rows(graph, every_layer, batches, options, threads)
    layers = [layer for layer in every_layer if width(layer) <= options.max_width]
    skipped += [
        (layer.node, f"{width(layer)} inputs per output channel, over {options.max_width}")
        for layer in every_layer
        if width(layer) > options.max_width
    ]
    inputs = _QuantizedInputs(model, plan, layers, batches, threads)
    edit = ModelEdit(model)
    gains: list[LayerGain] = []
    kept_nearest: list[str] = []
    with layer_progress(len(layers), progress, "reconstructing") as advance:
        for layer in layers:
            read = inputs.read(edit.model, layer)
            sums = _layer_sums(layer, read, rows[layer.node], graph, options.keep)
            weight = np.asarray(graph.initializers[layer.weight], np.float32)
            params = plan.tensors[layer.weight]
            bound, largest = group_bounds(layer, weight, params)
            canonical = layer.canonical(weight)
            grid = LayerGrid(
                scale=layer.canonical_scale(params),
                bound=bound,
                pinned=np.where(np.abs(canonical) == largest, np.sign(canonical), 0).astype(
                    np.int64
                ),
            )
            with blas_threads_for(layer.groups):
                solution = solve_layer(sums, canonical, _bias(graph, layer), grid, options.damping)
            node = graph.node(layer.node)
            spec = lookup(node.op_type, node.domain)
            assert spec is not None and spec.weight_port is not None  # layer_of found it
            stored = stored_weights(layer, solution.q, params, largest, bound)
            edit.set(node.name, spec.weight_port, stored, "w")
            if layer.bias is not None and spec.bias_port is not None:
                bias = solution.bias.reshape(-1).astype(np.float32)
                edit.set(node.name, spec.bias_port, bias, "b")
            gains.append(LayerGain(layer.node, solution.nearest_db, solution.db))
            if not solution.reconstructed:
                kept_nearest.append(layer.node)
            advance(layer.node)
    samples = sum(_count(batch) for batch in batches)
    before, after = output_sqnr(model, edit.model, plan, batches, threads, floats)
    notes = [
        f"{len(layers)} layer(s) reconstructed from {samples} sample(s), up to "
        f"{options.rows_per_sample} rows per sample, {options.keep:.0%} of rows kept, "
        f"damping {options.damping:g}; output SQNR measured on those samples"
    ]
    if inputs.frontier is not None:
        notes.append(
            "the quantized network carried forward layer by layer: at most "
            f"{inputs.frontier.peak_bytes / 2**20:.1f} MiB of its activations held"
        )
    if kept_nearest:
        notes.append(
            f"{len(kept_nearest)} layer(s) kept nearest rounding (not better on their rows): "
            + ", ".join(kept_nearest)
        )
    notes += [f"left at nearest rounding: {node} ({reason})" for node, reason in skipped]
    report = StepReport(
        name="reconstruct",
        seconds=time.perf_counter() - started,
        before_db=before,
        after_db=after,
        layers=tuple(gains),
        notes=tuple(notes),
    )
    return edit.model, report


@dataclass(frozen=True, eq=False)
class _Rows:
    """Where a layer's rows are (per batch: sample index, flat position) and the float
    layer's outputs there, [M, G, C]."""

    positions: list[tuple[np.ndarray, np.ndarray]]
    targets: list[np.ndarray]


def _float_rows(
    graph: Graph,
    layers: Sequence[LayerShape],
    batches: Sequence[Batch],
    options: ReconstructOptions,
    threads: int | None,
) -> tuple[dict[str, _Rows], list[np.ndarray]]:
    """One pass of the float network: each layer's positions and float outputs there, and
    the model's first output on each batch (the report's reference)."""
    outputs = [graph.node(layer.node).outputs[0] for layer in layers]
    inputs = [layer.input for layer in layers]
    first = graph.model.graph.output[0].name
    wanted = list(dict.fromkeys([*outputs, *inputs, first]))
    session = exposing_session(graph.model, wanted, threads=threads, lean=True)
    found: dict[str, _Rows] = {layer.node: _Rows([], []) for layer in layers}
    floats = []
    for index, batch in enumerate(batches):
        values = dict(zip(wanted, session.run(wanted, dict(batch)), strict=True))
        floats.append(np.asarray(values[first]))
        for number, (layer, output) in enumerate(zip(layers, outputs, strict=True)):
            rng = np.random.default_rng([options.seed, number, index])
            positions = layer.sample_positions(
                values[layer.input].shape, options.rows_per_sample, rng
            )
            found[layer.node].positions.append(positions)
            found[layer.node].targets.append(_output_rows(layer, values[output], positions))
    return found, floats


def width(layer: LayerShape) -> int:
    """K: the inputs of one output channel (a group's input channels times the taps)."""
    return math.prod(layer.weight_shape) // (layer.groups * layer.channels)


def _output_rows(
    layer: LayerShape, output: np.ndarray, positions: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """The layer's output at ``positions`` as [M, G, C] (the rows' targets, eq. R.3)."""
    sample_index, flat = positions
    if layer.layout == "conv":
        picked = output.reshape(output.shape[0], output.shape[1], -1)[sample_index, :, flat]
    else:
        picked = output.reshape(output.shape[0], -1, output.shape[-1])[sample_index, flat]
    return np.asarray(picked, np.float32).reshape(len(sample_index), layer.groups, -1)


class _QuantizedInputs:
    """Each layer's input as the QDQ network reconstructed so far computes it, per batch,
    carried forward by a ``Frontier`` (§I.8.1). A quantized graph input is fake-quantized
    by ``quantized_reader``, as is every input of a model with subgraphs (If, Loop), which
    cannot be cut into pieces: there each layer runs the network from its inputs."""

    def __init__(
        self,
        model: onnx.ModelProto,
        plan: QuantPlan,
        layers: Sequence[LayerShape],
        batches: Sequence[Batch],
        threads: int | None,
    ) -> None:
        self.plan, self.batches, self.threads = plan, batches, threads
        self.graph_inputs = {value.name for value in model.graph.input}
        order = [layer.input for layer in layers if layer.input not in self.graph_inputs]
        self.frontier = None
        if not has_subgraphs(model):
            self.frontier = Frontier(to_qdq(model, plan), order, batches, threads)

    def read(self, current: onnx.ModelProto, layer: LayerShape) -> Iterator[np.ndarray]:
        if self.frontier is None or layer.input in self.graph_inputs:
            reader = quantized_reader(current, self.plan, layer.input, self.threads)
            return (reader(batch) for batch in self.batches)
        return self.frontier.read(to_qdq(current, self.plan), layer.input)


def _layer_sums(
    layer: LayerShape,
    quantized: Iterator[np.ndarray],
    rows: _Rows,
    graph: Graph,
    keep: float,
) -> LayerSums:
    """The layer's normal equations over its kept rows (eqs. I.11, I.10); ``quantized``
    its input on each batch as the quantized network computes it."""
    weight = layer.canonical(np.asarray(graph.initializers[layer.weight], np.float32))
    bias = _bias(graph, layer)
    sums = LayerSums.zeros(*weight.shape)
    with blas_threads_for(layer.groups):
        _add_rows(layer, quantized, rows, weight, bias, keep, sums)
    return sums


def _add_rows(
    layer: LayerShape,
    quantized: Iterator[np.ndarray],
    rows: _Rows,
    weight: np.ndarray,
    bias: np.ndarray,
    keep: float,
    sums: LayerSums,
) -> None:
    for values, positions, targets in zip(quantized, rows.positions, rows.targets, strict=True):
        inputs = layer.rows(values, positions).astype(np.float32)
        predicted = _apply(inputs, weight) + bias[None].astype(np.float32)
        if layer.clamp is not None:  # what the folded activation clips does not count
            miss = np.clip(predicted, *layer.clamp) - np.clip(targets, *layer.clamp)
        else:
            miss = predicted - targets
        sums.add(inputs, targets, trimmed(miss, keep), with_bias=layer.bias is not None)


def _apply(rows: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Rows [M, G, K] through weights [G, C, K] per group: [M, G, C] (BLAS where it can)."""
    if weight.shape[0] == 1:
        return np.matmul(rows[:, 0, :], weight[0].T)[:, None, :]
    if weight.shape[1] == 1:  # depthwise: one channel per group
        return np.sum(rows * weight[None, :, 0, :], axis=2, keepdims=True)
    return np.einsum("mgk,gck->mgc", rows, weight)


def _bias(graph: Graph, layer: LayerShape) -> np.ndarray:
    bias = None if layer.bias is None else np.asarray(graph.initializers[layer.bias])
    canonical = layer.canonical_bias(bias)
    return np.zeros((layer.groups, layer.channels)) if canonical is None else canonical


def _split(batches: Sequence[Batch], size: int) -> list[Batch]:
    """Batches of at most ``size`` samples (the float pass holds every layer's output)."""
    result = []
    for batch in batches:
        count = _count(batch)
        for start in range(0, count, size):
            result.append({name: array[start : start + size] for name, array in batch.items()})
    return result


def _count(batch: Batch) -> int:
    return len(next(iter(batch.values())))
