"""Rebuilding the int8 model with nodes back in float: the fallback step and the safety net.

``run_fallback`` is ``quantize``'s fallback step (§R.7-§R.9): ``eightbit.improve.fallback.driver``
with a ``build`` that re-plans the prepared model with the returned nodes excluded.
``safety_net`` is the default preset's net (§I.9): first the cheap nodes after the last
heavy op back in float, then the fallback with the floor as budget, never slower than
ONNX Runtime's own int8 of the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import onnx

from eightbit.analysis.floor import SAFETY_FLOOR_DB, floor_metric
from eightbit.analysis.latency import LatencyRatio
from eightbit.analysis.memory import memory_usage
from eightbit.analysis.outputs import Metric
from eightbit.analysis.quick_check import QuickCheck, quick_check
from eightbit.analysis.slices import output_probabilities
from eightbit.calibrate import Ranges, open_data
from eightbit.calibrate.data import Batch, DataLike
from eightbit.export import to_qdq
from eightbit.graph import Graph
from eightbit.improve._onnx import restore_nodes
from eightbit.improve.budget import Budget, Measured, Score
from eightbit.improve.fallback.cost import one_sample
from eightbit.improve.fallback.driver import fallback
from eightbit.improve.measure import OutputReference, SqnrsOn
from eightbit.improve.presets import ImproveConfig
from eightbit.improve.promote import promote
from eightbit.improve.promote_cost import (
    arena_increases,
    footprint,
    promotion_costs,
    tensor_facts,
)
from eightbit.improve.promote_plan import at_int16_opset, extremes_for, promotion_candidates
from eightbit.improve.weights.bias_correction import bias_correction
from eightbit.ops import lookup
from eightbit.ops.joins import tail_nodes
from eightbit.plan import PlannedModel, QuantPlan, make_plan, rebias
from eightbit.quant import QuantConfig
from eightbit.safety_net import latency_cap
from eightbit.steps import StepReport

# Samples per run while the fallback measures a model.
EVALUATION_BATCH = 16
# The worst-slice note of a fallback runs the models on at most this many samples.
SLICE_NOTE_SAMPLES = 64
# A quick check of (float model, int8 model, batches): ``quick_check`` here, or on a cluster.
Checker = Callable[[onnx.ModelProto, onnx.ModelProto, list[Batch]], QuickCheck | None]
# The safety net's search (§I.9): ranked by each activation's own SQNR (one pass, not one
# rebuild per candidate) and at most this many returns, so that the default preset stays
# within a few times the plain quantize time; a net that cannot reach the floor so says so.
NET_SEARCH: dict[str, Any] = {"ranking": "own", "max_steps": 8}
# Samples the promoted model's own bias correction reads (§R.11): it runs once, so it reads
# more than the 8-bit step's 16 (MobileNetV2, every activation int16: 28.3 dB with 16,
# 28.4 dB with 64 on the evaluation crops).
PROMOTED_CORRECTION_SAMPLES = 64
# The net's promotion rung (§R.11): ranked by the tensors' own rounding (one pass), the
# search along that order bounded by R.17.
NET_PROMOTION: dict[str, Any] = {"ranking": "own"}


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
    rank_sqnrs: SqnrsOn | None = None,
    check: Checker | None = None,
    **search: Any,
) -> tuple[onnx.ModelProto, QuantPlan, StepReport, bool]:
    """Return nodes to float until the budget holds on the calibration samples; the last
    value says whether the model returned holds it (its measurement, latency aside).

    A node returned to float computes with its planned float constants again, not with the
    weights rounded or the bias corrected for int8. ``score``: how candidates are measured
    (default: an ``OutputReference`` here; ``eightbit.distributed`` scores on a cluster);
    ``rank_sqnrs``: how the ranking scores its candidates, ``check``: how the worst-slice
    note checks a model (default: both here).
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
        progress=progress, score=score, rank_sqnrs=rank_sqnrs, batch_size=EVALUATION_BATCH,
        **search,
    )  # fmt: skip
    note = worst_slices_note(net.float_model, qdq, result.model, samples, threads, check)
    report = result.report
    holds = result.measured.meets(budget)
    return result.model, result.plan, replace(report, notes=(*report.notes, note)), holds


def worst_slices_note(
    float_model: onnx.ModelProto,
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    samples: DataLike,
    threads: int | None,
    check: Checker | None = None,
) -> str:
    """The fallback's budget reads whole outputs; this says what the slices did (§A.9).
    ``check``: where the two quick checks run (default: here, on ``threads``)."""
    graph = Graph(float_model)
    data = open_data(samples, graph.inputs, batch_size=16, limit=SLICE_NOTE_SAMPLES)
    batches = [dict(batch) for batch in data]
    check = check or (lambda f, q, b: quick_check(f, q, b, threads))
    first = _worst_slice(check(float_model, before, batches))
    second = first if after is before else _worst_slice(check(float_model, after, batches))
    return (
        f"worst output slice (§A.9) on up to {SLICE_NOTE_SAMPLES} calibration samples: "
        f"before {first}; after {second}"
    )


def _worst_slice(check: QuickCheck | None) -> str:
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
    metric = _floor_of_first_output(graph)
    judge = OutputReference(
        net.float_model, open_data(samples, graph.inputs, batch_size=EVALUATION_BATCH), threads,
        metric,
    )  # fmt: skip
    holding = _floor_holds(judge, qdq, metric, missed[first])
    if holding is not None:
        report = replace(holding, seconds=time.perf_counter() - started)
        return qdq, plan, report, None
    source = open_data(samples, graph.inputs, batch_size=16)
    timer = LatencyRatio(net.float_model, one_sample(source, graph))
    cap, what = latency_cap(timer, net.float_model, qdq, source)
    start = net, plan, qdq
    net, plan, qdq, tail_note = _tail_in_float(net, plan, qdq, improve, timer, cap)
    budget = replace(improve, max_drop=0.0, min_sqnr=None, max_latency=cap)
    changed = None
    qdq, plan, report, _ = run_fallback(
        net, plan, qdq, samples, budget, metric, threads, False, score=judge, latency=timer,
        **NET_SEARCH,
    )  # fmt: skip
    notes = [
        f"engaged: {missed[first]}; {_FLOOR_BUDGET}; latency cap {what}",
        tail_note,
        *report.notes,
    ]
    if net.config.profile.int16_activations:
        floor = Budget(max_drop=0.0, metric=metric, max_latency=cap)
        qdq, plan, report, promotion_notes, changed = _promotion_instead(
            start, (qdq, plan, report), samples, threads, floor, timer, improve.separate_joins
        )
        notes += promotion_notes
    seconds = time.perf_counter() - started
    report = replace(report, name="safety_net", seconds=seconds, notes=tuple(notes))
    return qdq, plan, report, changed


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


def _promotion_instead(
    start: tuple[Prepared, QuantPlan, onnx.ModelProto],
    floated: tuple[onnx.ModelProto, QuantPlan, StepReport],
    samples: DataLike,
    threads: int | None,
    budget: Budget,
    latency: LatencyRatio | None,
    joins: bool,
    what: str = "rung 3, int16 promotion instead of float",
    only_if_met: bool = False,
) -> tuple[onnx.ModelProto, QuantPlan, StepReport, list[str], Prepared | None]:
    """When the model with nodes back in float (``floated``) misses ``budget``, tensors
    promoted to int16 instead (§R.11), from the model before (``start``), within the same
    cap; kept when it holds the budget, or (unless ``only_if_met``) misses it by less
    (budget held, then the metric's drop, then the output SQNR, on the calibration
    samples). Rung 3 of the net (§I.9), and a budget's last resort on a target with float
    kernels (§R.11, ``only_if_met``)."""
    net, plan, qdq = start
    judge = OutputReference(
        net.float_model, open_data(samples, Graph(net.float_model).inputs, batch_size=16),
        threads, budget.metric,
    )  # fmt: skip
    float_measured = judge(floated[0])
    if float_measured.meets(budget):
        return (*floated, [], None)
    promoted = run_promotion(net, plan, qdq, samples, budget, threads, False, judge, latency,
                             joins, **NET_PROMOTION)  # fmt: skip
    measured = judge(promoted.qdq)
    better = _budget_key(measured, budget) > _budget_key(float_measured, budget)
    better = better and (measured.meets(budget) or not only_if_met)
    verdict = "kept" if better else "not kept (it does not hold the budget better)"
    notes = [
        f"{what} ({verdict}): with float nodes {float_measured.describe()}; promoted "
        f"{measured.describe()}",
        *promoted.report.notes,
    ]
    if not better:
        return (*floated, notes, None)
    report = replace(floated[2], before_db=promoted.report.before_db,
                     after_db=promoted.report.after_db, layers=())  # fmt: skip
    return promoted.qdq, promoted.plan, report, notes, promoted.net


def _budget_key(measured: Measured, budget: Budget) -> tuple[bool, float, float]:
    drop = measured.metric_drop if measured.metric_drop is not None else 0.0
    return (measured.meets(budget), -drop, measured.sqnr_db)


def promote_after_fallback(
    start: tuple[Prepared, QuantPlan, onnx.ModelProto],
    floated: tuple[onnx.ModelProto, QuantPlan, StepReport],
    samples: DataLike,
    improve: ImproveConfig,
    metric: Metric | None,
    threads: int | None,
) -> tuple[onnx.ModelProto, QuantPlan, StepReport, Prepared | None]:
    """A budget the fallback to float could not meet, tried with int16 promotion instead
    (§R.11), under the budget's own latency cap; the fallback's report gets the notes."""
    net = start[0]
    budget = improve.budget(metric)
    timer = None
    if budget.max_latency is not None:
        graph = Graph(net.float_model)
        feed = one_sample(open_data(samples, graph.inputs, batch_size=16), graph)
        timer = LatencyRatio(net.float_model, feed)
    qdq, plan, report, notes, promoted = _promotion_instead(
        start, floated, samples, threads, budget, timer, improve.separate_joins,
        "budget missed with float nodes: int16 promotion instead", only_if_met=True,
    )  # fmt: skip
    return qdq, plan, replace(report, notes=(*report.notes, *notes)), promoted


def _floor_of_first_output(graph: Graph) -> Metric:
    """``floor_metric`` for the float ``graph``'s first output, its silent probability
    slices left out (A.11)."""
    spans = output_probabilities(graph).get(graph.outputs[0].name, ())
    return partial(floor_metric, probabilities=spans)


def _promotion_rung(
    net: Prepared,
    plan: QuantPlan,
    qdq: onnx.ModelProto,
    samples: DataLike,
    threads: int | None,
    joins: bool,
) -> Promoted:
    """The net on a target without float kernels: int16 promotion to the floor."""
    budget = Budget(max_drop=0.0, metric=_floor_of_first_output(Graph(net.float_model)))
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


@dataclass(frozen=True)
class Promoted:
    """What ``run_promotion`` settled on: the model, its plan, the ranges it was planned on
    (promoted tensors at their observed extremes, §R.11), the rebuild base that keeps them
    int16 for a fallback to float after it, whether the budget holds, and the report."""

    qdq: onnx.ModelProto
    plan: QuantPlan
    net: Prepared
    met: bool
    report: StepReport
    promoted: tuple[str, ...] = ()
    rebuilds: int = 0
    rebuild_bound: int = 0


def promote_build(net: Prepared, tensors: frozenset[str], joins: bool) -> tuple[Prepared, _Built]:
    """``net`` with ``tensors`` int16 (§Q17) on their observed extremes (§R.11), its model.

    The prepared model is quantized, with the plan's usual weight-side steps (the bias
    correction measured for the 8-bit model): on MobileNetV2 the int8 weights' own error
    caps a model without them near 20 dB whatever is promoted, so a search scoring
    uncorrected candidates never meets a 25 dB budget. ``run_promotion`` corrects the
    chosen model once more against its own errors and keeps the better of the two."""
    ranges = extremes_for(net.ranges, tensors)
    int16 = tuple(dict.fromkeys([*net.config.int16, *sorted(tensors)]))
    config = replace(net.config, int16=int16)
    kept = replace(net, ranges=ranges, config=config)
    plan = make_plan(Graph(net.prepared), ranges, config, separate_joins=joins)
    return kept, _Built(to_qdq(net.prepared, plan), plan)


def run_promotion(
    net: Prepared,
    plan: QuantPlan,
    qdq: onnx.ModelProto,
    samples: DataLike,
    budget: Budget,
    threads: int | None,
    progress: bool,
    score: Score | None = None,
    latency: LatencyRatio | None = None,
    joins: bool = True,
    **search: Any,
) -> Promoted:
    """Promote tensors to int16 until ``budget`` holds on the calibration samples (§R.11),
    each candidate costed for ``net.config.target`` (``promote_cost``); ``joins``: the
    plan's ``separate_joins``."""
    graph = Graph(net.float_model)
    source = open_data(samples, graph.inputs, batch_size=EVALUATION_BATCH)
    corrected = net.prepared is not net.planned  # a weight-side step changed the model
    net = replace(net, planned=at_int16_opset(net.planned))
    net = replace(net, prepared=at_int16_opset(net.prepared) if corrected else net.planned)
    candidates = promotion_candidates(plan, net.ranges, Graph(net.planned))
    feed = one_sample(source, graph)
    facts = tensor_facts(net.prepared, candidates, feed, threads)
    parameters = memory_usage(graph, Graph(qdq)).int8_bytes
    _, arena = footprint(Graph(net.prepared), plan, facts, parameters)
    target = net.config.target
    # mcu: a tensor on the arena's peak costs its bytes, one off it nothing (§R.11)
    grown = arena_increases(Graph(net.prepared), facts) if target == "mcu" else None
    costs = promotion_costs(facts, target, parameters, arena, grown)
    if score is None:
        score = OutputReference(net.float_model, source, threads, budget.metric)
    built: dict[frozenset[str], Prepared] = {}
    chosen: list[tuple[Prepared, str]] = []  # the candidates' source, at the first rebuild

    def build(tensors: frozenset[str]) -> _Built:
        if not tensors:
            return _Built(qdq, plan)
        if not chosen:
            chosen.append(_candidate_source(net, frozenset(candidates), joins, score))
        built[tensors], model = promote_build(chosen[0][0], tensors, joins)
        return model

    result = promote(
        net.float_model, build, samples, budget, costs, base=_Built(qdq, plan), target=target,
        batch_size=EVALUATION_BATCH, threads=threads, progress=progress, score=score,
        latency=latency, **search,
    )  # fmt: skip
    final = built.get(frozenset(result.promoted), net) if result.promoted else net
    notes = list(result.report.notes) + [note for _, note in chosen]
    quantized = result.quantized
    if result.promoted:
        final, quantized, note = _corrected_again(final, quantized, samples, threads, score)
        notes.append(note)
    if target == "mcu":
        flash, size = footprint(Graph(net.prepared), result.quantized.plan, facts, parameters)
        notes.append(
            f"mcu footprint (estimate, §R.11): flash {parameters:,} -> {flash:,} B "
            f"({flash / max(parameters, 1):.3f}x), arena {arena:,} -> {size:,} B "
            f"({size / max(arena, 1):.3f}x)"
        )
    else:
        notes.append(
            "ONNX Runtime has no 16-bit integer kernels: it runs each int16 Q/DQ pair and the "
            "nodes around it in float (§Q17), so a promoted tensor costs float latency there"
        )
    report = replace(result.report, notes=tuple(notes))
    return Promoted(
        quantized.model, quantized.plan, final, result.met, report, result.promoted,
        result.rebuilds, result.rebuild_bound,
    )  # fmt: skip


def _candidate_source(
    net: Prepared, candidates: frozenset[str], joins: bool, score: Score
) -> tuple[Prepared, str]:
    """What the candidates are built from (§R.11): the prepared model (the plan's weight-side
    steps, corrected for the 8-bit errors) or the planned one, whichever measures better
    (``score``) with every candidate promoted; the planned one when no step changed it."""
    if net.prepared is net.planned:
        return net, "candidates built from the planned model (no weight-side step ran)"
    planned = replace(net, prepared=net.planned)
    with_steps = score(promote_build(net, candidates, joins)[1].model)
    without = score(promote_build(planned, candidates, joins)[1].model)
    every = f"with all {len(candidates)} candidate(s) int16"
    if with_steps.sqnr_db >= without.sqnr_db:
        return net, (
            f"candidates built from the prepared model (its 8-bit bias correction): "
            f"{with_steps.sqnr_db:.2f} dB {every}, {without.sqnr_db:.2f} dB without it"
        )  # fmt: skip
    return planned, (
        f"candidates built from the planned model: {without.sqnr_db:.2f} dB {every}, "
        f"{with_steps.sqnr_db:.2f} dB with the 8-bit bias correction"
    )  # fmt: skip


def _corrected_again(
    net: Prepared, built: PlannedModel, samples: DataLike, threads: int | None, score: Score
) -> tuple[Prepared, PlannedModel, str]:
    """Bias correction (§I.3) of the planned model against the promoted model's own errors,
    kept where it measures better (``score``) than the promoted model as built (whose biases
    were corrected for the 8-bit errors)."""
    corrected, _ = bias_correction(
        net.planned, built.plan, samples, reference=net.planned, keep="always",
        samples=PROMOTED_CORRECTION_SAMPLES, threads=threads,
    )  # fmt: skip
    plan = rebias(Graph(corrected), built.plan)
    again = _Built(to_qdq(corrected, plan), plan)
    before, after = score(built.model), score(again.model)
    if not after.sqnr_db > before.sqnr_db:
        return net, built, (
            f"bias correction of the promoted model against its own errors: not kept "
            f"({after.sqnr_db:.2f} dB, the 8-bit correction {before.sqnr_db:.2f} dB)"
        )  # fmt: skip
    kept = replace(net, prepared=corrected)
    return kept, again, (
        f"bias correction of the promoted model against its own errors: kept "
        f"({before.sqnr_db:.2f} -> {after.sqnr_db:.2f} dB on calibration samples)"
    )  # fmt: skip
