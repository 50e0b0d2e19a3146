"""Rebuilding the int8 model with nodes back in float: the fallback step and the safety net.

``run_fallback`` is ``quantize``'s fallback step (§R.7-§R.9): ``eightbit.improve.fallback.driver``
with a ``build`` that re-plans the prepared model with the returned nodes excluded.
``safety_net`` is the default preset's net (§I.9): first the cheap nodes after the last
heavy op back in float, then the fallback with the floor as budget, never slower than
ONNX Runtime's own int8 of the model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import onnx

from eightbit.analysis.floor import SAFETY_FLOOR_DB, floor_metric
from eightbit.analysis.latency import LatencyRatio
from eightbit.analysis.outputs import Metric
from eightbit.analysis.quick_check import quick_check
from eightbit.analysis.slices import output_probabilities
from eightbit.calibrate import Ranges, open_data
from eightbit.calibrate.data import DataLike
from eightbit.export import to_qdq
from eightbit.graph import Graph
from eightbit.improve._onnx import restore_nodes
from eightbit.improve.budget import Score
from eightbit.improve.fallback.cost import one_sample
from eightbit.improve.fallback.driver import fallback
from eightbit.improve.measure import OutputReference
from eightbit.improve.presets import ImproveConfig
from eightbit.ops import lookup
from eightbit.ops.joins import tail_nodes
from eightbit.plan import QuantPlan, make_plan
from eightbit.quant import QuantConfig
from eightbit.safety_net import latency_cap
from eightbit.steps import StepReport

# Samples per run while the fallback measures a model.
EVALUATION_BATCH = 16
# The worst-slice note of a fallback runs the models on at most this many samples.
SLICE_NOTE_SAMPLES = 64
# The safety net's search (§I.9): ranked by each activation's own SQNR (one pass, not one
# rebuild per candidate) and at most this many returns, so that the default preset stays
# within a few times the plain quantize time; a net that cannot reach the floor so says so.
NET_SEARCH: dict[str, Any] = {"ranking": "own", "max_steps": 8}


@dataclass(frozen=True)
class Prepared:
    """What a fallback rebuilds from: the float model checked against, the prepared model
    (the one quantized), the planned float constants a returned node gets back, the
    ranges and the configuration."""

    float_model: onnx.ModelProto
    prepared: onnx.ModelProto
    planned: onnx.ModelProto
    ranges: Ranges
    config: QuantConfig


@dataclass(frozen=True)
class _Built:
    """An int8 model and its plan, as the fallback step rebuilds them."""

    model: onnx.ModelProto
    plan: QuantPlan


def _with_float(net: Prepared, excluded: frozenset[str], joins: bool) -> tuple[Prepared, _Built]:
    """``net`` with ``excluded`` back in float (planned constants), and its int8 model."""
    restored = restore_nodes(net.prepared, net.planned, sorted(excluded))
    exclude = tuple(dict.fromkeys([*net.config.exclude, *sorted(excluded)]))
    kept = replace(net, prepared=restored, config=replace(net.config, exclude=exclude))
    plan = make_plan(Graph(restored), net.ranges, kept.config, separate_joins=joins)
    return kept, _Built(to_qdq(restored, plan), plan)


def run_fallback(
    net: Prepared,
    plan: QuantPlan,
    qdq: onnx.ModelProto,
    samples: DataLike,
    improve: ImproveConfig,
    metric: Metric | None,
    threads: int | None,
    progress: bool,
    score: Score | None = None,
    **search: Any,
) -> tuple[onnx.ModelProto, QuantPlan, StepReport]:
    """Return nodes to float until the budget holds on the calibration samples.

    A node returned to float computes with its planned float constants again, not with the
    weights rounded or the bias corrected for int8. ``score``: how candidates are measured
    (default: an ``OutputReference`` here; ``eightbit.distributed`` scores on a cluster).
    ``search``: options of ``eightbit.improve.fallback.driver.fallback`` (``ranking``,
    ``max_steps``).
    """

    def build(excluded: frozenset[str]) -> _Built:
        if not excluded:
            return _Built(qdq, plan)
        return _with_float(net, excluded, improve.separate_joins)[1]

    budget = improve.budget(metric)
    source = open_data(samples, Graph(net.float_model).inputs, batch_size=EVALUATION_BATCH)
    if score is None:
        score = OutputReference(net.float_model, source, threads, metric)
    result = fallback(
        net.float_model, build, samples, budget, base=_Built(qdq, plan), threads=threads,
        progress=progress, score=score, batch_size=EVALUATION_BATCH, **search,
    )  # fmt: skip
    note = worst_slices_note(net.float_model, qdq, result.model, samples, threads)
    report = result.report
    return result.model, result.plan, replace(report, notes=(*report.notes, note))


def worst_slices_note(
    float_model: onnx.ModelProto,
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    samples: DataLike,
    threads: int | None,
) -> str:
    """The fallback's budget reads whole outputs; this says what the slices did (§A.9)."""
    first = _worst_slice(float_model, before, samples, threads)
    second = first if after is before else _worst_slice(float_model, after, samples, threads)
    return (
        f"worst output slice (§A.9) on up to {SLICE_NOTE_SAMPLES} calibration samples: "
        f"before {first}; after {second}"
    )


def _worst_slice(
    float_model: onnx.ModelProto, model: onnx.ModelProto, samples: DataLike, threads: int | None
) -> str:
    graph = Graph(float_model)
    data = open_data(samples, graph.inputs, batch_size=16, limit=SLICE_NOTE_SAMPLES)
    check = quick_check(float_model, model, data, threads)
    if check is None:
        return "-"
    worst = min(check.outputs, key=lambda output: output.worst_slice_sqnr_db)
    collapsed = " (collapsed)" if any(output.collapsed for output in check.outputs) else ""
    return f"{worst.worst_slice_sqnr_db:.2f} dB on {worst.name!r}{collapsed}"


def safety_net(
    net: Prepared,
    plan: QuantPlan,
    qdq: onnx.ModelProto,
    samples: DataLike | None,
    missed: Mapping[str, str],
    improve: ImproveConfig,
    threads: int | None,
) -> tuple[onnx.ModelProto, QuantPlan, StepReport]:
    """The cheap tail in float, then the fallback with the floor as budget, both within
    ONNX Runtime's int8 latency (§I.9). ``missed``: output -> why it missed the floor."""
    started = time.perf_counter()
    first = net.float_model.graph.output[0].name
    cannot = None
    if samples is None:
        cannot = "no calibration samples (ranges from a file) to judge on"
    elif first not in missed:
        cannot = f"the fallback's budget reads the first output only ({first!r}), which holds"
    if cannot is not None:
        note = f"{'; '.join(missed.values())}; not run: {cannot}"
        return qdq, plan, StepReport("safety_net", 0.0, None, None, notes=(note,))
    assert samples is not None  # cannot is set otherwise
    graph = Graph(net.float_model)
    source = open_data(samples, graph.inputs, batch_size=16)
    timer = LatencyRatio(net.float_model, one_sample(source, graph))
    cap, what = latency_cap(timer, net.float_model, qdq, source)
    net, plan, qdq, tail_note = _tail_in_float(net, plan, qdq, improve, timer, cap)
    budget = replace(improve, max_drop=0.0, min_sqnr=None, max_latency=cap)
    metric = partial(floor_metric, probabilities=output_probabilities(graph).get(first, ()))
    qdq, plan, report = run_fallback(
        net, plan, qdq, samples, budget, metric, threads, False, latency=timer, **NET_SEARCH
    )
    notes = (
        f"engaged: {missed[first]}; budget: the first output's worst slice >= "
        f"{SAFETY_FLOOR_DB:g} dB and no collapse, on the calibration samples; latency cap {what}",
        tail_note,
        *report.notes,
    )
    seconds = time.perf_counter() - started
    return qdq, plan, replace(report, name="safety_net", seconds=seconds, notes=notes)


def _tail_in_float(
    net: Prepared,
    plan: QuantPlan,
    qdq: onnx.ModelProto,
    improve: ImproveConfig,
    timer: LatencyRatio,
    cap: float,
) -> tuple[Prepared, QuantPlan, onnx.ModelProto, str]:
    """The first rung of the net: every quantized node after the last heavy op back in
    float (§Q13's reasoning for the whole tail), kept when it stays within ``cap``."""
    tail = cheap_tail(plan, Graph(net.prepared))
    if not tail:
        return net, plan, qdq, "tail after the last heavy op: nothing quantized there"
    kept, built = _with_float(net, frozenset(tail), improve.separate_joins)
    ratio = timer(built.model)
    names = ", ".join(tail[:8]) + (f" and {len(tail) - 8} more" if len(tail) > 8 else "")
    if ratio > cap:
        return net, plan, qdq, (
            f"tail after the last heavy op left int8: in float ({names}) the model would run "
            f"at {ratio:.3f}x float, above the cap"
        )  # fmt: skip
    note = (
        f"tail after the last heavy op returned to float first ({len(tail)} node(s): "
        f"{names}; {ratio:.3f}x float)"
    )
    return kept, built.plan, built.model, note


def cheap_tail(plan: QuantPlan, graph: Graph) -> list[str]:
    """Quantized nodes after the last heavy op (no Conv/Gemm/MatMul reachable, not one
    itself) that compute: not the activations folded into their producer, not the
    value-preserving ops (they go float with their neighbours, §Q6)."""
    tail = tail_nodes(graph)
    names = []
    for decision in plan.quantized_nodes():
        spec = lookup(decision.op_type)
        if decision.name not in tail or decision.fused_into is not None:
            continue
        # A value-preserving op follows its neighbours by itself (§Q6); named alone it
        # would need a range nobody calibrated.
        if spec is None or spec.is_layer or spec.same_as_input:
            continue
        names.append(decision.name)
    return names
