"""``bias_correction``: remove the shift weight rounding causes (docs/numerics.md §I.3).

A layer ``y = W x + b`` whose weights are stored as ``W_q = W + ΔW`` computes on average
``E[y_q] − E[y] = ΔW · E[x]`` more than the float layer, per output channel. Subtracting
that from the bias makes the expectation exact again (Nagel et al. 2019, §4.2):

- empirical (with data): ``E[x]`` is the per-position mean of the layer's float input
  over calibration samples, and ``ΔW · E[x]`` is the layer run on that mean image with
  weights ``ΔW`` and no bias (exact for any padding and stride: the layer is linear),
  averaged over output positions; every layer is corrected from the float network's
  inputs at once (independent, §I.3.2 says why not sequential);
- analytic (without data): a layer whose input is a BatchNormalization's output ``z``
  (folded into its producer) through Relu, Clip or nothing has
  ``E[x_c] = E[f(z_c)]`` with ``z_c ~ N(β_c, γ_c²)`` in closed form (§I.3.3).

The step measures the int8 model against the float one on the same samples before and
after and, when asked to be adaptive, keeps the correction only if the first output's
SQNR did not fall.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from eightbit.calibrate.data import DataLike
from eightbit.export import to_qdq
from eightbit.graph import Graph, Node
from eightbit.graph.batchnorm import is_batchnorm
from eightbit.improve._onnx import ModelEdit
from eightbit.improve.float_pass import SharedFloat, int8_outputs, output_shift, output_sqnr
from eightbit.improve.measure import Compared, compare, count, read_samples
from eightbit.improve.weights.bias_shifts import empirical_shifts, layer_spec, weight_delta
from eightbit.ops import Contraction, lookup
from eightbit.ops.node_selection import clamp_bounds
from eightbit.ops.spec import optional_input
from eightbit.plan import QuantPlan, rebias
from eightbit.steps import LayerGain, StepReport

# 16 images give each channel thousands of positions to average over; more only costs time
# (MobileNetV2: benchmarks/RESULTS.md#numerics-i1).
DEFAULT_SAMPLES = 16
Keep = Literal["always", "if_better"]
# Layers whose interior outputs each read every weight tap once, so that E[x] per input
# channel gives their shift (I.3.3); a transposed convolution's output reads a number of
# taps that depends on its position.
_INTERIOR = (Contraction.CONVOLUTION, Contraction.MATRIX)


@dataclass(frozen=True)
class ChannelNormal:
    """A per-channel normal distribution N(mean_c, std_c²), e.g. a BatchNormalization output."""

    mean: np.ndarray
    std: np.ndarray


def batchnorm_statistics(model: onnx.ModelProto) -> dict[str, ChannelNormal]:
    """The output distribution of every inference BatchNormalization: N(β, γ²) per channel.

    Read from the model as exported (``normalize`` folds the BNs away); keyed by the BN's
    output tensor, which the folded layer writes afterwards.
    """
    constants = {tensor.name: tensor for tensor in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if not is_batchnorm(node):
            continue
        if len(node.input) < 3 or not all(name in constants for name in node.input[1:3]):
            continue
        gamma, beta = (
            numpy_helper.to_array(constants[n]).astype(np.float64) for n in node.input[1:3]
        )
        found[node.output[0]] = ChannelNormal(mean=beta, std=np.abs(gamma))
    return found


def bias_correction(
    model: onnx.ModelProto,
    plan: QuantPlan,
    data: DataLike | None = None,
    *,
    reference: onnx.ModelProto | None = None,
    statistics: Mapping[str, ChannelNormal] | None = None,
    keep: Keep = "if_better",
    weight_shifts: bool = True,
    samples: int = DEFAULT_SAMPLES,
    threads: int | None = None,
    shared: SharedFloat | None = None,
    in_place: bool = False,
) -> tuple[onnx.ModelProto, StepReport]:
    """``model`` with corrected biases, and what the step did; plan it with ``rebias``.

    ``plan`` quantizes ``model``. ``reference``: the float model whose outputs the int8
    model should match (default ``model``; after learned rounding, the model before it,
    since ``model``'s weights then sit on the grid). ``data``: calibration samples (the
    first ``samples`` are read); without it, ``statistics`` (``batchnorm_statistics`` of
    the exported model) give the analytic correction. ``keep="if_better"`` returns the
    inputs unchanged when the first output's SQNR on the samples fell. ``weight_shifts``
    False: the weights' rounding was chosen (learned rounding, whose layer-wise objective
    already includes the mean): only the output layer is corrected (§I.3.4).
    ``shared``: calibration's pass of ``model`` (§C.10): when it holds the samples' float
    output and input means, only the int8 models run (no per-layer SQNRs then); with the
    clipping choice's int8 output (``SharedFloat.int8_before``, which the caller keeps
    only when ``plan`` was made from its ranges) the uncorrected model does not run again.
    ``in_place``: the corrected biases are written into ``model`` itself rather than a copy
    (a caller that keeps the uncorrected model elsewhere, on disk: §C.11).
    """
    started = time.perf_counter()
    reference = reference or model
    graph = Graph(model)
    layers, skipped = corrected_layers(graph, plan)
    notes = [f"{n} {op} node(s) not corrected: {why}" for (op, why), n in sorted(skipped.items())]
    if not layers:
        notes.insert(0, "no quantized layer with a bias input to correct")
        return model, StepReport(
            "bias_correction", time.perf_counter() - started, None, None, (), tuple(notes)
        )
    if data is None and not weight_shifts:
        notes.insert(0, "skipped: learned rounding chose the weights, and there is no data")
        return model, StepReport(
            "bias_correction", time.perf_counter() - started, None, None, (), tuple(notes)
        )
    if data is None:
        shifts, missing = _analytic_shifts(graph, Graph(reference), plan, layers, statistics or {})
        corrected = _apply(model, graph, shifts)
        notes.insert(0, f"{len(shifts)} layer(s) corrected from BatchNormalization statistics")
        if missing:
            notes.append(f"{missing} layer(s) without input statistics left as they are")
        seconds = time.perf_counter() - started
        return corrected, StepReport("bias_correction", seconds, None, None, (), tuple(notes))
    batches = read_samples(data, graph, samples)
    inputs = list(dict.fromkeys(graph.node(layer).inputs[0] for layer in layers))
    outputs = {layer: layer_output(graph, plan, layer) for layer in layers}
    last = _output_layer(graph, layers)
    rank = None if last is None else _rank(graph, graph.outputs[0].name)
    # The corrected models are made again at the end rather than held while the int8 ones
    # are measured: a big model's weights are then held once less (issue 20).
    seen = count(batches)
    if shared is not None and not (reference is model and shared.serves(model, seen, inputs)):
        shared = None
    if shared is not None:
        notes.append("measured against calibration's float pass (§C.10): output SQNR only")

    def measured(
        quantized: onnx.ModelProto,
        tensors: Mapping[str, str],
        means: Sequence[str] = (),
        output_rank: int | None = None,
    ) -> Compared:
        if shared is None:
            return compare(reference, quantized, batches, tensors, means, threads, output_rank)
        # (C.11) Handed on, not held here: the int8 proto goes while its session runs.
        given = [quantized]
        del quantized
        return _against_shared(shared, given.pop(), batches, means, output_rank, threads)

    # The int8 models are made in the calls that measure them, so that no frame here holds
    # one while its session runs (§C.11).
    if weight_shifts:
        before = _before(shared, seen, inputs) or measured(to_qdq(model, plan), outputs, inputs)
        shifts = empirical_shifts(graph, Graph(reference), plan, layers, before.means, threads)
        after = measured(_corrected_qdq(model, graph, shifts, plan), outputs, (), rank)
    else:
        shifts = {}
        before = after = measured(to_qdq(model, plan), outputs, (), rank)
    chosen = shifts
    if last is not None and after.output_shift is not None:
        # (I.3.4) The output layer, corrected against the int8 network's own output.
        total = {**shifts, last: shifts.get(last, 0.0) + after.output_shift}
        final = measured(_corrected_qdq(model, graph, total, plan), {last: outputs[last]})
        if final.output_db > after.output_db:
            notes.append(f"output layer {last!r} also corrected against the int8 output")
            chosen = total
            after = replace(
                after, output_db=final.output_db, layers={**after.layers, **final.layers}
            )
    kept = keep == "always" or after.output_db >= before.output_db
    notes.insert(
        0,
        f"{len(shifts)} layer(s) corrected from {seen} calibration samples"
        if weight_shifts
        else f"weights as learned rounding chose them; output layer measured on {seen} samples",
    )
    verdict = "kept" if kept else "reverted"
    notes.append(
        f"{verdict}: output SQNR {before.output_db:.2f} -> {after.output_db:.2f} dB on "
        "calibration samples"
    )
    report = StepReport(
        name="bias_correction",
        seconds=time.perf_counter() - started,
        before_db=before.output_db,
        after_db=after.output_db if kept else before.output_db,
        layers=tuple(
            LayerGain(n, before.layers[n], after.layers[n]) for n in layers if n in before.layers
        ),
        notes=tuple(notes),
    )
    return (_apply(model, graph, chosen, in_place) if kept and chosen else model), report


def _before(shared: SharedFloat | None, samples: int, means: Sequence[str]) -> Compared | None:
    """(C.10) The uncorrected int8 model measured from the clipping choice's output of
    it on the same samples (``SharedFloat.int8_before``), when there is one."""
    if shared is None:
        return None
    values = shared.int8_before(shared.int8_ranges, samples)
    if values is None:
        return None
    return Compared(
        layers={},
        output_db=output_sqnr(shared.output[:samples], values),
        means={tensor: shared.means[tensor] for tensor in means},
    )


def _against_shared(
    shared: SharedFloat,
    quantized: onnx.ModelProto,
    batches: Sequence[dict[str, np.ndarray]],
    means: Sequence[str],
    output_rank: int | None,
    threads: int | None,
) -> Compared:
    """``compare`` of ``quantized`` with calibration's float pass (§C.10): the int8 model
    alone runs; the output's SQNR and shift, and the float means the pass kept."""
    reference = shared.output[: count(batches)]
    given = [quantized]
    del quantized  # (C.11) handed on: the int8 proto goes while its session runs
    values = int8_outputs(given.pop(), batches, shared.output_name, threads)
    shift = output_shift(reference, values) if output_rank is not None else None
    return Compared(
        layers={},
        output_db=output_sqnr(reference, values),
        means={tensor: shared.means[tensor] for tensor in means},
        output_shift=shift,
    )


def _corrected_qdq(
    model: onnx.ModelProto, graph: Graph, shifts: Mapping[str, np.ndarray], plan: QuantPlan
) -> onnx.ModelProto:
    """The QDQ model of ``model`` corrected by ``shifts``, made without a corrected copy of
    the float model where every shifted layer has a bias of its own (``_shifted_in_place``);
    else from one, let go at once."""
    with _shifted_in_place(model, graph, shifts) as shifted:
        if shifted:
            return to_qdq(model, rebias(Graph(model), plan))
    corrected = _apply(model, graph, shifts)
    return to_qdq(corrected, rebias(Graph(corrected), plan))


@contextmanager
def _shifted_in_place(
    model: onnx.ModelProto, graph: Graph, shifts: Mapping[str, np.ndarray]
) -> Iterator[bool]:
    """``b ← b − shift`` written over ``model``'s own biases (the values ``_apply`` gives),
    and the biases put back on leaving, whatever happens: the QDQ model of a correction is
    then made without a copy of every weight (VGG-16: 528 MB, issue 20). Yields False, and
    changes nothing, when a shifted layer's bias is absent, shared, or a graph output.
    Nothing else reads ``model`` meanwhile: one thread, and the caller's views of it do
    not read the biases inside the block."""
    tensors = {tensor.name: tensor for tensor in model.graph.initializer}
    readers = Counter(name for node in model.graph.node for name in set(node.input))
    readers.update(value.name for value in model.graph.output)
    edits = []
    for name, shift in shifts.items():
        node = graph.node(name)
        spec = layer_spec(node)
        assert spec.weight_port is not None and spec.bias_port is not None
        bias = optional_input(node, spec.bias_port)
        if bias is None or bias not in tensors or readers[bias] != 1:
            yield False
            return
        weight = graph.info(node.inputs[spec.weight_port])
        dtype = np.float32 if weight is None else weight.dtype
        current = numpy_helper.to_array(tensors[bias]).astype(np.float64)
        edits.append(
            (tensors[bias], numpy_helper.from_array((current - shift).astype(dtype), bias))
        )
    saved = [(tensor, onnx.TensorProto()) for tensor, _ in edits]
    for tensor, copy in saved:
        copy.CopyFrom(tensor)
    try:
        for tensor, value in edits:
            tensor.CopyFrom(value)
        yield True
    finally:
        for tensor, copy in saved:
            tensor.CopyFrom(copy)


def corrected_layers(graph: Graph, plan: QuantPlan) -> tuple[list[str], dict[tuple[str, str], int]]:
    """Quantized layers with a weight on the int8 grid and a bias port, in topological order."""
    layers: list[str] = []
    skipped: dict[tuple[str, str], int] = {}
    for decision in plan.quantized_nodes():
        node = graph.node(decision.name)
        spec = lookup(node.op_type, node.domain)
        if spec is None or not spec.is_layer or spec.weight_port is None:
            continue
        weight = optional_input(node, spec.weight_port)
        if spec.bias_port is None and weight in plan.tensors:
            key = (node.op_type, "it has no bias input to correct")
            skipped[key] = skipped.get(key, 0) + 1
            continue
        if spec.bias_port is None or weight not in plan.tensors:
            continue
        if weight not in graph.initializers:
            continue
        layers.append(node.name)
    return layers, skipped


def _output_layer(graph: Graph, layers: Sequence[str]) -> str | None:
    """The corrected layer that writes the first graph output itself, if one does."""
    producer = graph.producer(graph.outputs[0].name) if graph.outputs else None
    return producer.name if producer is not None and producer.name in layers else None


def _rank(graph: Graph, tensor: str) -> int | None:
    info = graph.info(tensor)
    return None if info is None or info.shape is None else len(info.shape)


def layer_output(graph: Graph, plan: QuantPlan, layer: str) -> str:
    """The tensor ``layer`` writes in the int8 model: its folded activation's output, if any."""
    folded = plan.decision(layer).fused_activation
    return graph.node(folded if folded is not None else layer).outputs[0]


# --- shifts: eightbit.improve.weights.bias_shifts ------------------------------------


def _analytic_shifts(
    graph: Graph,
    reference: Graph,
    plan: QuantPlan,
    layers: Sequence[str],
    statistics: Mapping[str, ChannelNormal],
) -> tuple[dict[str, np.ndarray], int]:
    """(I.3.3) ΔW · E[x] with E[x] from the statistics; border positions of padded
    convolutions are read as interior ones (the form of Nagel et al.)."""
    shifts, missing = {}, 0
    for name in layers:
        node = graph.node(name)
        expected = _expected_input(graph, node.inputs[0], statistics)
        if expected is None or layer_spec(node).contraction not in _INTERIOR:
            missing += 1
            continue
        shifts[name] = _interior_shift(node, weight_delta(graph, reference, plan, node), expected)
    return shifts, missing


def _expected_input(
    graph: Graph, tensor: str, statistics: Mapping[str, ChannelNormal]
) -> np.ndarray | None:
    """E[x_c] of ``tensor`` = f(z) for a BN output z and f in {nothing, Relu, Clip}."""
    if tensor in statistics:
        stats = statistics[tensor]
        return stats.mean.copy()
    producer = graph.producer(tensor)
    spec = None if producer is None else lookup(producer.op_type, producer.domain)
    if producer is None or spec is None or spec.clamp is None:
        return None
    source = producer.inputs[0]
    if source not in statistics:
        return None
    low, high = clamp_bounds(graph, producer)
    return clipped_normal_mean(statistics[source], low, high)


def clipped_normal_mean(stats: ChannelNormal, low: float, high: float) -> np.ndarray:
    """E[clip(z, low, high)] for z ~ N(μ, σ²) per channel (I.3.4); f(μ) where σ = 0."""
    mu, sigma = np.asarray(stats.mean, np.float64), np.asarray(stats.std, np.float64)
    safe = np.where(sigma > 0, sigma, 1.0)
    result = np.clip(mu, low, high)
    a = (low - mu) / safe if math.isfinite(low) else np.full_like(mu, -np.inf)
    b = (high - mu) / safe if math.isfinite(high) else np.full_like(mu, np.inf)
    cdf_a, cdf_b = _cdf(a), _cdf(b)
    pdf_a, pdf_b = _pdf(a), _pdf(b)
    low_part = low * cdf_a if math.isfinite(low) else 0.0
    high_part = high * (1.0 - cdf_b) if math.isfinite(high) else 0.0
    inside = mu * (cdf_b - cdf_a) + sigma * (pdf_a - pdf_b)
    return np.where(sigma > 0, low_part + high_part + inside, result)


def _cdf(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return np.asarray(0.5 * (1.0 + erf(x / math.sqrt(2.0))))


def _pdf(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))


def _interior_shift(node: Node, delta: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Σ_{c,k} ΔW[o, c, k] · E[x_c] (Conv, grouped included) or Σ_k ΔW[k, n] · E[x_k] (Gemm)."""
    spec = layer_spec(node)
    assert spec.weight_layout is not None
    layout = spec.weight_layout(node.attrs, delta.shape)
    assert layout is not None, f"{node.name!r}: a quantized layer reads its channels on axis 1"
    if spec.contraction is Contraction.MATRIX:
        matrix = np.moveaxis(delta, (layout.in_axis, layout.out_axis), (0, 1))  # [K, N]
        return np.asarray(expected @ matrix)
    groups = layout.groups
    outputs, per_group = delta.shape[:2]
    summed = delta.reshape(outputs, per_group, -1).sum(axis=2)  # [O, C/g]
    grouped_means = expected.reshape(groups, per_group)  # [g, C/g]
    group_of_output = np.arange(outputs) // (outputs // groups)
    return np.einsum("oc,oc->o", summed, grouped_means[group_of_output])


# --- result ------------------------------------------------------------------------------


def _apply(
    model: onnx.ModelProto,
    graph: Graph,
    shifts: Mapping[str, np.ndarray],
    in_place: bool = False,
) -> onnx.ModelProto:
    """``b ← b − shift`` for every shifted layer (a zero bias first where there is none),
    in a copy of ``model`` or (``in_place``) in ``model`` itself.

    ``graph``: a view of ``model`` (or of a model with the same nodes)."""
    edit = ModelEdit(model, copy=not in_place)
    for name, shift in shifts.items():
        spec = layer_spec(graph.node(name))
        assert spec.weight_port is not None and spec.bias_port is not None
        bias = edit.value(name, spec.bias_port)
        # The weight's type from its declaration: a big weight is not converted to read it.
        weight = graph.info(graph.node(name).inputs[spec.weight_port])
        dtype = np.float32 if weight is None else weight.dtype
        current = np.zeros(shift.shape) if bias is None else bias.astype(np.float64)
        edit.set(name, spec.bias_port, (current - shift).astype(dtype), f"{name}_bias")
    return edit.model
