"""What promoting an activation tensor to int16 costs, per target (docs/numerics.md §R.11).

``tensor_facts`` measures, from one run of the float model on one sample, each candidate's
size and the multiply-accumulates of the weighted ops that read it. ``promotion_costs``
turns them into each target's cost: for ``mcu`` the extra flash (CMSIS-NN's s16 kernels take
int64 biases), arena (two bytes per element instead of one) and an estimate of cycles (MACs
times ``S16_CYCLE_FACTOR - 1``), each relative to the all-int8 model's; for ``ort`` the
share of the model's MACs that leave ONNX Runtime's int8 kernels (it runs 16-bit Q/DQ in
float). ``footprint`` is the mcu model's flash and arena with a set of tensors promoted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import numpy as np
import onnx

from eightbit.codegen.arena import lifetimes, plan_arena
from eightbit.graph import Graph, Node
from eightbit.graph.session import exposing_session
from eightbit.ops import Contraction, lookup
from eightbit.plan import QuantPlan

# Cycles per MAC of CMSIS-NN's s16 convolution/fully-connected kernels over its s8 ones:
# an estimate, not a measurement. The s8 kernels widen four int8 inputs to int16 with one
# SXTB16 pair and feed SMLAD (two MACs a cycle); the s16 kernels read twice the bytes per
# input, accumulate in int64 (arm_convolve_s16, arm_nn_mat_mult_kernel_s16) and have no
# im2col fast path for every shape, so about twice the cycles per MAC.
S16_CYCLE_FACTOR = 2.0
# Extra flash per output channel of a weighted op reading an int16 input: CMSIS-NN's s16
# kernels take int64 biases (cmsis_nn_bias_data) where s8 ones take int32.
S16_BIAS_EXTRA_BYTES = 4


@dataclass(frozen=True)
class TensorFacts:
    """One candidate: its elements per sample, the MACs of the weighted ops reading it and
    of its producer (when weighted), and the bias elements of the weighted readers."""

    elements: int
    reader_macs: int
    writer_macs: int
    reader_channels: int


@dataclass(frozen=True)
class PromotionCost:
    """What promoting one tensor adds (§R.11): ``flash_bytes``, ``arena_bytes`` and ``cycles``
    (mcu estimates), ``float_macs`` (MACs that leave ORT's int8 kernels) and ``relative``,
    the one number the search orders by (a fraction of the all-int8 model's cost)."""

    tensor: str
    flash_bytes: int
    arena_bytes: int
    cycles: int
    float_macs: int
    relative: float

    def describe(self, target: str) -> str:
        if target == "mcu":
            return (
                f"{self.tensor}: +{self.flash_bytes:,} B flash, +{self.arena_bytes:,} B arena, "
                f"+{self.cycles:,} cycles (est.)"
            )
        return f"{self.tensor}: {self.float_macs:,} MACs out of int8 kernels"


def tensor_facts(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    feed: Mapping[str, np.ndarray],
    threads: int | None = None,
) -> dict[str, TensorFacts]:
    """The facts of each of ``tensors`` (names of ``model``'s activations), per sample, from
    one run of ``model`` on ``feed``."""
    graph = Graph(model)
    weighted = [n for n in graph.nodes if _contraction(n) is not None]
    inputs = {info.name for info in graph.inputs}
    wanted = list(dict.fromkeys([*tensors, *(n.outputs[0] for n in weighted)]))
    exposed = [name for name in wanted if name not in inputs]
    session = exposing_session(model, exposed, threads=threads, lean=True)
    values = dict(zip(exposed, session.run(exposed, dict(feed)), strict=True))
    rows = max(len(next(iter(feed.values()))), 1)
    shapes = {name: np.shape(value) for name, value in values.items()}
    shapes.update((name, np.shape(feed[name])) for name in inputs if name in feed)
    macs = {n.name: _macs(graph, n, shapes) // rows for n in weighted}
    facts = {}
    for name in tensors:
        readers = [n for n in graph.consumers(name) if _contraction(n) is not None]
        producer = graph.producer(name)
        writer = macs.get(producer.name, 0) if producer is not None else 0
        facts[name] = TensorFacts(
            elements=math.prod(shapes[name]) // rows,
            reader_macs=sum(macs[n.name] for n in readers),
            writer_macs=writer,
            reader_channels=sum(_output_channels(n, shapes) for n in readers),
        )
    return facts


def promotion_costs(
    facts: Mapping[str, TensorFacts],
    target: str,
    flash: int,
    arena: int,
    arena_increase: Mapping[str, int] | None = None,
) -> dict[str, PromotionCost]:
    """Each candidate's cost on ``target`` (eq. R.15 for mcu, R.16 elsewhere); ``flash`` and
    ``arena``: the all-int8 model's bytes, the scale of the mcu terms; ``arena_increase``:
    each candidate's own arena cost (``arena_increases``; default: its elements)."""
    total_macs = max(sum(f.reader_macs for f in facts.values()), 1)
    costs = {}
    for name, fact in facts.items():
        extra_flash = S16_BIAS_EXTRA_BYTES * fact.reader_channels
        cycles = int((S16_CYCLE_FACTOR - 1.0) * fact.reader_macs) + fact.elements
        float_macs = fact.reader_macs + fact.writer_macs
        grown = fact.elements if arena_increase is None else arena_increase[name]
        if target == "mcu":
            relative = extra_flash / max(flash, 1) + grown / max(arena, 1) + cycles / total_macs
        else:
            relative = (float_macs + fact.elements) / total_macs
        costs[name] = PromotionCost(name, extra_flash, grown, cycles, float_macs, relative)
    return costs


def footprint(
    graph: Graph, plan: QuantPlan, facts: Mapping[str, TensorFacts], parameters: int
) -> tuple[int, int]:
    """(flash, arena) bytes of the mcu model of ``plan`` (§R.11): ``parameters`` (the int8
    model's weights and biases) plus the s16 kernels' wider biases, and the greedy arena
    (``codegen.arena``) over the tensors between nodes, one byte per int8 element, two per
    int16, in node order; the model's own inputs and outputs are the caller's buffers. A
    layer output whose int16 clamp the engine folds (E.14) is not stored."""
    wide = {name for name, params in plan.tensors.items() if params.dtype == "int16"}
    flash = parameters + sum(
        S16_BIAS_EXTRA_BYTES * facts[name].reader_channels for name in wide if name in facts
    )
    return flash, arena_bytes(graph, facts, wide, folded_clamps(graph, plan))


def arena_bytes(
    graph: Graph,
    facts: Mapping[str, TensorFacts],
    wide: Set[str],
    folded: Mapping[str, str] | None = None,
) -> int:
    """The greedy arena over the tensors of ``facts`` (``wide``: two bytes an element),
    each ``folded`` clamp's output written by its layer instead (E.14)."""
    folded = folded or {}
    ends = {info.name for info in (*graph.inputs, *graph.outputs)}
    sizes = {
        name: fact.elements * (2 if name in wide else 1)
        for name, fact in facts.items()
        if name not in ends and name not in folded
    }
    clamps = {graph.consumers(layer_output)[0].name for layer_output in folded}
    steps = [
        (tuple(n.inputs), tuple(folded.get(name, name) for name in n.outputs))
        for n in graph.nodes
        if n.name not in clamps
    ]
    return plan_arena(lifetimes(steps, sizes, {})).size


def arena_increases(graph: Graph, facts: Mapping[str, TensorFacts]) -> dict[str, int]:
    """Each candidate's own arena cost (§R.11): the greedy arena with it alone int16 minus
    the all-int8 one; 0 for a tensor off the arena's peak, up to its elements on it."""
    base = arena_bytes(graph, facts, frozenset())
    return {name: arena_bytes(graph, facts, {name}) - base for name in facts}


def folded_clamps(graph: Graph, plan: QuantPlan) -> dict[str, str]:
    """Layer output -> its clamp's output, for every int16 clamp the engine folds into the
    layer's bounds (E.14): a Relu/Clip keeping its input's int16 parameters, the only reader
    of a Conv/ConvTranspose/Gemm/MatMul output."""
    outputs = {info.name for info in graph.outputs}
    folded = {}
    for node in graph.nodes:
        spec = lookup(node.op_type, node.domain)
        if spec is None or spec.clamp is None or not node.inputs or not node.outputs:
            continue
        source, target = node.inputs[0], node.outputs[0]
        params, kept = plan.tensors.get(source), plan.tensors.get(target)
        producer = graph.producer(source)
        if params is None or params.dtype != "int16" or params != kept or source in outputs:
            continue
        if producer is None or _contraction(producer) is None:
            continue
        if len(graph.consumers(source)) == 1:
            folded[source] = target
    return folded


def _contraction(node: Node) -> Contraction | None:
    """How ``node`` applies a weight (None: not a layer): its MACs move to the s16 kernels
    (or, on ONNX Runtime, out of the int8 kernels) when its input is promoted."""
    spec = lookup(node.op_type, node.domain)
    return None if spec is None else spec.contraction


def _macs(graph: Graph, node: Node, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of one weighted node on the run's batch."""
    out = shapes.get(node.outputs[0])
    if out is None:
        return 0
    contraction = _contraction(node)
    weight = graph.initializers.get(node.inputs[1]) if len(node.inputs) > 1 else None
    if contraction is Contraction.CONVOLUTION and weight is not None:
        return math.prod(out) * math.prod(weight.shape[1:])
    if contraction is Contraction.TRANSPOSED_CONVOLUTION and weight is not None:
        return math.prod(shapes.get(node.inputs[0], ())) * math.prod(weight.shape[1:])
    source = shapes.get(node.inputs[0])
    depth = source[-1] if source else (weight.shape[0] if weight is not None else 1)
    return math.prod(out) * int(depth)


def _output_channels(node: Node, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Bias elements of a weighted node: its output channels (axis 1 for a convolution,
    the last axis for a matrix product)."""
    out = shapes.get(node.outputs[0], ())
    if not out:
        return 0
    matrix = _contraction(node) is Contraction.MATRIX
    return int(out[-1] if matrix or len(out) < 2 else out[1])
