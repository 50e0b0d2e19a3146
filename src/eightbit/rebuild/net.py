"""The default preset's safety net (§I.9): the floor judged on the calibration samples,
then the cheap nodes after the last heavy op back in float, then the fallback with the
floor as budget, never slower than ONNX Runtime's own int8 of the model; int16 promotion
instead where the target runs it (§R.11)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any

import onnx

from eightbit.analysis.floor import SAFETY_FLOOR_DB, floor_metric
from eightbit.analysis.latency import LatencyRatio
from eightbit.analysis.outputs import Metric
from eightbit.analysis.slices import output_probabilities, output_spatial_axes
from eightbit.calibrate import open_data
from eightbit.calibrate.data import DataLike
from eightbit.graph import Graph
from eightbit.improve.budget import Budget
from eightbit.improve.fallback.cost import one_sample
from eightbit.improve.measure import OutputReference
from eightbit.improve.presets import ImproveConfig
from eightbit.ops import lookup
from eightbit.ops.joins import tail_nodes
from eightbit.plan import QuantPlan
from eightbit.rebuild.fallback import EVALUATION_BATCH, Prepared, run_fallback, with_float
from eightbit.rebuild.promotion import NET_PROMOTION, Promoted, promotion_instead, run_promotion
from eightbit.safety_net import CAP_TOLERANCE, LatencyCap, latency_cap
from eightbit.steps import StepReport

# The safety net's search (§I.9): ranked by each activation's own SQNR (one pass, not one
# rebuild per candidate) and at most this many returns, so that the default preset stays
# within a few times the plain quantize time; a net that cannot reach the floor so says so.
NET_SEARCH: dict[str, Any] = {"ranking": "own", "max_steps": 8}


def safety_net(
    net: Prepared,
    plan: QuantPlan,
    qdq: onnx.ModelProto,
    samples: DataLike | None,
    missed: Mapping[str, str],
    improve: ImproveConfig,
    threads: int | None,
) -> tuple[onnx.ModelProto, QuantPlan, StepReport, Prepared | None]:
    """The cheap tail in float, then the fallback with the floor as budget, both within
    ONNX Runtime's int8 latency (§I.9), then int16 promotion where the target runs it
    (§R.11). ``missed``: output -> why it missed the floor. The last value: what the returned
    plan quantizes (model, ranges) when promotion changed it (else None)."""
    started = time.perf_counter()
    first = net.float_model.graph.output[0].name
    cannot = None
    if samples is None:
        cannot = "no calibration samples (ranges from a file) to judge on"
    elif first not in missed:
        cannot = f"the fallback's budget reads the first output only ({first!r}), which holds"
    if cannot is not None:
        note = f"{'; '.join(missed.values())}; not run: {cannot}"
        return qdq, plan, StepReport("safety_net", 0.0, None, None, notes=(note,)), None
    assert samples is not None  # cannot is set otherwise
    if not net.config.profile.float_nodes:  # mcu: promotion is the only rung (§R.11)
        promoted = _promotion_rung(net, plan, qdq, samples, threads, improve.separate_joins)
        engaged = (
            f"engaged: {missed[first]}; {_FLOOR_BUDGET}; no latency cap (no float kernels: "
            "only int16 promotion, no node back to float)"
        )
        seconds = time.perf_counter() - started
        report = replace(
            promoted.report, name="safety_net", seconds=seconds,
            notes=(engaged, *promoted.report.notes),
        )  # fmt: skip
        changed = promoted.net if promoted.promoted else None
        return promoted.qdq, promoted.plan, report, changed
    graph = Graph(net.float_model)
    metric = floor_of_first_output(graph)
    source = open_data(samples, graph.inputs, batch_size=EVALUATION_BATCH)
    judge = OutputReference(net.float_model, source, threads, metric)
    holding = _floor_holds(judge, qdq, metric, missed[first])
    if holding is not None:
        report = replace(holding, seconds=time.perf_counter() - started)
        return qdq, plan, report, None
    timer = LatencyRatio(net.float_model, one_sample(source, graph.inputs))
    limit = latency_cap(timer, net.float_model, qdq, source)
    cap = limit.ratio
    start = net, plan, qdq
    net, plan, qdq, tail_note = _tail_in_float(net, plan, qdq, improve, timer, cap)
    budget = replace(improve, max_drop=0.0, min_sqnr=None, max_latency=cap)
    changed = None
    qdq, plan, report, _ = run_fallback(
        net, plan, qdq, samples, budget, metric, threads, False, score=judge, latency=timer,
        **NET_SEARCH,
    )  # fmt: skip
    start_sqnr = report.before_db  # the model before the net, on the calibration samples
    notes = [
        f"engaged: {missed[first]}; {_FLOOR_BUDGET}; latency cap {limit.what}",
        tail_note,
        *report.notes,
    ]
    if net.config.profile.int16_activations:
        floor = Budget(max_drop=0.0, metric=metric, max_latency=cap)
        qdq, plan, report, promotion_notes, changed = promotion_instead(
            start, (qdq, plan, report), samples, threads, floor, timer, improve.separate_joins
        )
        notes += promotion_notes
    reverted = None
    if qdq is not start[2]:  # the accuracy rule first: a model it reverts is not timed
        reverted = _partial_and_worse(judge, qdq, metric, start_sqnr) or _slower_than_cap(
            limit, qdq, timer.feed
        )
    if reverted is not None:  # the model before the net, as if it had returned nothing
        notes.append(reverted)
        qdq, plan, changed = start[2], start[1], None
        report = replace(report, after_db=report.before_db)
    seconds = time.perf_counter() - started
    report = replace(report, name="safety_net", seconds=seconds, notes=tuple(notes))
    return qdq, plan, report, changed


def _partial_and_worse(
    judge: OutputReference, qdq: onnx.ModelProto, metric: Metric, start_sqnr: float | None
) -> str | None:
    """Why the net's model is not kept, or None: a net that still misses the floor may keep
    a partial repair only if it costs the output no SQNR on the calibration samples (§I.9,
    eq. I.9b). The floor reads the worst slice alone, and a few samples' worst slice can be
    bought with noise everywhere else."""
    measured = judge(qdq)
    if measured.meets(Budget(max_drop=0.0, metric=metric)):
        return None
    if start_sqnr is None or not measured.sqnr_db < start_sqnr:
        return None
    return (
        f"reverted: the floor is still missed ({measured.describe()}) and the net's model "
        f"loses {start_sqnr - measured.sqnr_db:.2f} dB of output SQNR on the calibration "
        "samples (a partial repair may not cost the whole output); the model before the net "
        "is kept"
    )


def _slower_than_cap(
    limit: LatencyCap, qdq: onnx.ModelProto, feed: Mapping[str, Any]
) -> str | None:
    """Why the net's model is not kept, or None: timed beside the cap's reference, run for
    run, it must stay within ``CAP_TOLERANCE`` of it (§I.9). The cap itself compares ratios
    to float timed at different moments, whose drift on a busy machine is as large as the
    tolerance."""
    paired = limit.paired_ratio(qdq, feed)
    if paired <= CAP_TOLERANCE:
        return None
    return (
        f"reverted: timed beside the cap's reference, run for run, the net's model takes "
        f"{paired:.3f}x its time (more than {CAP_TOLERANCE:g}x); the model before the net "
        "is kept"
    )


def _floor_holds(
    judge: OutputReference, qdq: onnx.ModelProto, metric: Metric, missed: str
) -> StepReport | None:
    """The net's report when the model already holds the floor on the calibration samples
    it judges on (§I.9): the miss was the held-back samples' alone, and the fallback would
    return no node, so neither it nor the latency cap (an ONNX Runtime quantization of the
    model) is run. None when the floor is missed there too."""
    measured = judge(qdq)
    if not measured.meets(Budget(max_drop=0.0, metric=metric)):
        return None
    note = (
        f"engaged: {missed} on the held-back samples; not run: the floor holds on the "
        f"{judge.samples} calibration samples the net judges on ({measured.describe()}), "
        "so nothing was returned to float"
    )
    return StepReport("safety_net", 0.0, measured.sqnr_db, measured.sqnr_db, notes=(note,))


_FLOOR_BUDGET = (
    f"budget: the first output's worst slice >= {SAFETY_FLOOR_DB:g} dB and no collapse, "
    "on the calibration samples"
)


def floor_of_first_output(graph: Graph) -> Metric:
    """``floor_metric`` for the float ``graph``'s first output, its silent probability
    slices (A.11) and its spatial axes (§A.9) left out."""
    first = graph.outputs[0].name
    spans = output_probabilities(graph).get(first, ())
    spatial = output_spatial_axes(graph).get(first, ())
    return partial(floor_metric, probabilities=spans, spatial=spatial)


def _promotion_rung(
    net: Prepared,
    plan: QuantPlan,
    qdq: onnx.ModelProto,
    samples: DataLike,
    threads: int | None,
    joins: bool,
) -> Promoted:
    """The net on a target without float kernels: int16 promotion to the floor."""
    budget = Budget(max_drop=0.0, metric=floor_of_first_output(Graph(net.float_model)))
    return run_promotion(
        net, plan, qdq, samples, budget, threads, False, joins=joins, **NET_PROMOTION
    )


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
    kept, built = with_float(net, frozenset(tail), improve.separate_joins)
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
