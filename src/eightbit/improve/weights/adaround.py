"""``adaround``: learned rounding of every quantized weight layer (docs/numerics.md).

For each quantized Conv, Gemm and MatMul with a constant weight, in topological order, the
step draws input rows from calibration data as the quantized network sees them (the QDQ
model of the weights learned so far) and the float targets (the float network), chooses
for each weight to round down or up so that the layer's output error is smallest
(``adaround_layer.solve_layer``), and writes the weights back exactly on the plan's grid.
The returned float model gives the same plan scales and, through ``to_qdq``, the learned
integers. torch is an optional extra: without it the step says how to install it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from eightbit.calibrate.data import Batch, DataLike
from eightbit.errors import ConfigError
from eightbit.graph import Graph
from eightbit.improve.measure import read_samples
from eightbit.improve.progress import layer_progress
from eightbit.improve.weights.adaround_layer import AdaRoundOptions, LayerProblem, solve_layer
from eightbit.improve.weights.adaround_rows import LayerShape, group_bounds, stored_weights
from eightbit.improve.weights.layerwise import (
    Reader,
    output_sqnr,
    quantized_reader,
    weight_layers,
)
from eightbit.plan import QuantPlan
from eightbit.steps import LayerGain, StepReport

__all__ = ["AdaRoundOptions", "adaround", "require_torch", "with_float_weights"]

log = logging.getLogger("eightbit.improve")

NO_TORCH = "learned rounding (--adaround) needs PyTorch: pip install 'eightbit[torch]'"


def require_torch() -> None:
    """ConfigError naming the install command when torch is not installed."""
    if importlib.util.find_spec("torch") is None:
        raise ConfigError(NO_TORCH)


def adaround(
    model: onnx.ModelProto,
    plan: QuantPlan,
    data: DataLike,
    options: AdaRoundOptions = AdaRoundOptions(),  # noqa: B008 (frozen, so sharing is safe)
    *,
    threads: int | None = None,
    progress: bool = False,
) -> tuple[onnx.ModelProto, StepReport]:
    """A copy of the normalized float ``model`` whose quantized weights are learned-rounded.

    ``plan`` is the plan of ``model`` (its weight scales are kept); ``data`` calibration
    samples (anything ``eightbit.calibrate.open_data`` reads; the first ``options.samples``
    are used). ``threads``: ONNX Runtime's threads and torch's (None: ONNX Runtime's
    choice and one torch thread: a layer's steps are many small operations, and more
    threads stall on each other when other work shares the cores). The report gives, per
    layer, the reconstruction SQNR with nearest and with the rounding kept (never lower),
    and the first output's SQNR on the same samples before and after.
    """
    require_torch()
    if not isinstance(options, AdaRoundOptions):
        raise ConfigError(f"'options' must be AdaRoundOptions (got {type(options).__name__})")
    started = time.perf_counter()
    graph = Graph(model)
    batches = read_samples(data, graph, options.samples)
    samples = sum(_rows(batch) for batch in batches)
    layers, skipped = weight_layers(graph, plan)
    current = _copy(model)
    gains: list[LayerGain] = []
    kept_nearest: list[str] = []
    pools: list[int] = []
    shortened = 0
    bar = layer_progress(len(layers), progress, "learned rounding")
    with _torch_threads(threads), bar as advance:
        for index, layer in enumerate(layers):
            params = plan.tensors[layer.weight]
            problem = _problem(graph, current, plan, layer, batches, index, options, threads)
            solution = solve_layer(problem, options)
            pools.append(problem.inputs.shape[0])
            bound, largest = group_bounds(layer, graph.initializers[layer.weight], params)
            weights = stored_weights(layer, solution.q, params, largest, bound)
            _set_initializer(current, layer.weight, weights)
            gains.append(LayerGain(layer.node, solution.nearest_db, solution.db))
            log.info(
                "%s: %d rows, %d iterations in %.1f s, %.2f -> %.2f dB%s",
                layer.node,
                problem.inputs.shape[0],
                solution.iterations,
                solution.seconds,
                solution.nearest_db,
                solution.db,
                "" if solution.learned else " (nearest kept)",
            )
            if not solution.learned:
                kept_nearest.append(layer.node)
            shortened += solution.iterations < options.iterations
            advance(layer.node)
    before, after = output_sqnr(model, current, plan, batches, threads)
    notes = _notes(pools, kept_nearest, skipped, shortened, samples, options)
    report = StepReport(
        name="adaround",
        seconds=time.perf_counter() - started,
        before_db=before,
        after_db=after,
        layers=tuple(gains),
        notes=notes,
    )
    return current, report


def with_float_weights(
    model: onnx.ModelProto, original: onnx.ModelProto, nodes: Iterable[str]
) -> onnx.ModelProto:
    """A copy of ``model`` in which ``nodes`` read their weights from ``original`` again.

    For a fallback after learned rounding: a node returned to float should compute with its
    float weights, not with the learned-rounded ones.
    """
    result = _copy(model)
    wanted = set(nodes)
    originals = {tensor.name: tensor for tensor in original.graph.initializer}
    rewritten = {
        name
        for node in result.graph.node
        if node.name in wanted
        for name in node.input
        if name in originals
    }
    for tensor in result.graph.initializer:
        if tensor.name in rewritten:
            tensor.CopyFrom(originals[tensor.name])
    return result


def _problem(
    graph: Graph,
    current: onnx.ModelProto,
    plan: QuantPlan,
    layer: LayerShape,
    batches: Sequence[Batch],
    index: int,
    options: AdaRoundOptions,
    threads: int | None,
) -> LayerProblem:
    """The layer's pool of rows (§R.3): quantized-network inputs, float-network targets.

    ``index`` (the layer's place in the order) and ``options.seed`` seed its row positions.
    """
    params = plan.tensors[layer.weight]
    weight = np.asarray(graph.initializers[layer.weight], dtype=np.float32)
    canonical = layer.canonical(weight)
    bias = None if layer.bias is None else np.asarray(graph.initializers[layer.bias])
    canonical_bias = layer.canonical_bias(bias)
    read_float = Reader(graph.model, layer.input, threads)
    read_quantized = quantized_reader(current, plan, layer.input, threads)
    rng = np.random.default_rng([options.seed, index])
    per_sample = math.ceil(options.rows / sum(_rows(batch) for batch in batches))
    inputs, targets = [], []
    for batch in batches:
        float_values = read_float(batch)
        positions = layer.sample_positions(float_values.shape, per_sample, rng)
        float_rows = layer.rows(float_values, positions)
        inputs.append(layer.rows(read_quantized(batch), positions).astype(np.float32))
        targets.append(_outputs(float_rows, canonical, canonical_bias, layer.clamp))
    bound, largest = group_bounds(layer, weight, params)
    problem = LayerProblem(
        weight=canonical,
        scale=layer.canonical_scale(params),
        bound=bound,
        bias=canonical_bias,
        inputs=np.concatenate(inputs),
        targets=np.concatenate(targets),
        clamp=layer.clamp,
        pinned=np.abs(canonical) == largest,
    )
    return problem


def _outputs(
    rows: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, clamp: tuple[float, float] | None
) -> np.ndarray:
    """y = a(x Wᵀ + b) per group (eq. R.3), from rows [M, G, K] to outputs [M, G, C]."""
    grouped = np.matmul(
        np.transpose(rows, (1, 0, 2)).astype(np.float64), np.transpose(weight, (0, 2, 1))
    )
    if bias is not None:
        grouped += bias.astype(np.float64)[:, None, :]
    if clamp is not None:
        grouped = np.clip(grouped, *clamp)
    return np.transpose(grouped, (1, 0, 2)).astype(np.float32)


def _notes(
    pools: list[int],
    kept_nearest: list[str],
    skipped: list[tuple[str, str]],
    shortened: int,
    samples: int,
    options: AdaRoundOptions,
) -> tuple[str, ...]:
    rows = (
        f"{min(pools)}-{max(pools)}"
        if pools and min(pools) != max(pools)
        else str(max(pools, default=0))
    )
    notes = [
        f"{len(pools)} layer(s) optimized on {samples} sample(s), {rows} rows per layer, "
        f"{options.iterations} iterations; output SQNR measured on those samples",
    ]
    if kept_nearest:
        notes.append(
            f"{len(kept_nearest)} layer(s) kept nearest rounding (learned rounding was not "
            f"better on their rows): {', '.join(kept_nearest)}"
        )
    if shortened:
        notes.append(
            f"{shortened} layer(s) ran fewer iterations to stay within "
            f"layer_seconds={options.layer_seconds}"
        )
    notes += [f"left at nearest rounding: {node} ({reason})" for node, reason in skipped]
    return tuple(notes)


def _set_initializer(model: onnx.ModelProto, name: str, values: np.ndarray) -> None:
    for tensor in model.graph.initializer:
        if tensor.name == name:
            tensor.CopyFrom(numpy_helper.from_array(values, name))
            return
    raise AssertionError(f"no initializer {name!r}")


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    result = onnx.ModelProto()
    result.CopyFrom(model)
    return result


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` (default 1) while the block runs."""
    torch: Any = importlib.import_module("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
