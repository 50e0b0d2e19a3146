"""int16 promotion of activations to a budget (§R.11): the search that rebuilds the model
with tensors promoted, after the fallback or instead of it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import onnx

from eightbit.analysis.latency import LatencyRatio
from eightbit.analysis.memory import memory_usage
from eightbit.analysis.outputs import Metric
from eightbit.calibrate import open_data
from eightbit.calibrate.data import DataLike
from eightbit.export import to_qdq
from eightbit.graph import Graph
from eightbit.improve.budget import Budget, Measured, Score
from eightbit.improve.fallback.cost import one_sample
from eightbit.improve.measure import OutputReference
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
from eightbit.plan import PlannedModel, QuantPlan, make_plan, rebias
from eightbit.rebuild.fallback import EVALUATION_BATCH, Built, Prepared
from eightbit.steps import StepReport

# The net's promotion rung (§R.11): ranked by the tensors' own rounding (one pass), the
# search along that order bounded by R.17.
NET_PROMOTION: dict[str, Any] = {"ranking": "own"}
# Samples the promoted model's own bias correction reads (§R.11): it runs once, so it reads
# more than the 8-bit step's 16 (MobileNetV2, every activation int16: 28.3 dB with 16,
# 28.4 dB with 64 on the evaluation crops).
PROMOTED_CORRECTION_SAMPLES = 64


def promotion_instead(
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
        feed = one_sample(open_data(samples, graph.inputs, batch_size=16), graph.inputs)
        timer = LatencyRatio(net.float_model, feed)
    qdq, plan, report, notes, promoted = promotion_instead(
        start, floated, samples, threads, budget, timer, improve.separate_joins,
        "budget missed with float nodes: int16 promotion instead", only_if_met=True,
    )  # fmt: skip
    return qdq, plan, replace(report, notes=(*report.notes, *notes)), promoted


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


def promote_build(net: Prepared, tensors: frozenset[str], joins: bool) -> tuple[Prepared, Built]:
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
    return kept, Built(to_qdq(net.prepared, plan), plan)


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
    feed = one_sample(source, graph.inputs)
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

    def build(tensors: frozenset[str]) -> Built:
        if not tensors:
            return Built(qdq, plan)
        if not chosen:
            chosen.append(_candidate_source(net, frozenset(candidates), joins, score))
        built[tensors], model = promote_build(chosen[0][0], tensors, joins)
        return model

    result = promote(
        net.float_model, build, samples, budget, costs, base=Built(qdq, plan), target=target,
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
    again = Built(to_qdq(corrected, plan), plan)
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
