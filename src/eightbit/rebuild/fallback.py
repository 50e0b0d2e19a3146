"""The fallback step (§R.7-§R.9): ``eightbit.improve.fallback.driver`` with a ``build``
that re-plans the prepared model with the returned nodes excluded, and what every rebuild
of the int8 model shares (``Prepared``, ``with_float``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import onnx

from eightbit.analysis.outputs import Metric
from eightbit.analysis.quick_check import QuickCheck, quick_check
from eightbit.calibrate import Ranges, open_data
from eightbit.calibrate.data import Batch, DataLike
from eightbit.export import QuantizedConstants, to_qdq
from eightbit.graph import Graph
from eightbit.improve._onnx import restore_nodes
from eightbit.improve.budget import Score
from eightbit.improve.fallback.driver import fallback
from eightbit.improve.measure import OutputReference, SqnrsOn
from eightbit.improve.presets import ImproveConfig
from eightbit.plan import QuantPlan, WeightParamsCache, make_plan
from eightbit.quant import QuantConfig
from eightbit.steps import StepReport

# Samples per run while the fallback measures a model.
EVALUATION_BATCH = 16

# The worst-slice note of a fallback runs the models on at most this many samples.
SLICE_NOTE_SAMPLES = 64

# Quick checks of (float model, int8 models, batches), one per int8 model: ``quick_check``
# here, or on a cluster (where the float model runs once for all of them).
Checker = Callable[[onnx.ModelProto, list[onnx.ModelProto], list[Batch]], list[QuickCheck | None]]


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
class Built:
    """An int8 model and its plan, as the fallback step rebuilds them."""

    model: onnx.ModelProto
    plan: QuantPlan


def with_float(
    net: Prepared,
    excluded: frozenset[str],
    joins: bool,
    cache: QuantizedConstants | None = None,
    weights: WeightParamsCache | None = None,
) -> tuple[Prepared, Built]:
    """``net`` with ``excluded`` back in float (planned constants), and its int8 model.
    ``cache``: the integer weights of earlier rebuilds, copied where they recur;
    ``weights``: their weight and bias parameters, likewise (§R.10)."""
    restored = restore_nodes(net.prepared, net.planned, sorted(excluded))
    exclude = tuple(dict.fromkeys([*net.config.exclude, *sorted(excluded)]))
    kept = replace(net, prepared=restored, config=replace(net.config, exclude=exclude))
    plan = make_plan(
        Graph(restored), net.ranges, kept.config, separate_joins=joins, weights=weights
    )
    return kept, Built(to_qdq(restored, plan, cache=cache), plan)


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

    constants = QuantizedConstants()  # the rebuilds' integer weights, while the step runs
    weights = WeightParamsCache()  # and their weight and bias parameters

    def build(excluded: frozenset[str]) -> Built:
        if not excluded:
            return Built(qdq, plan)
        return with_float(net, excluded, improve.separate_joins, constants, weights)[1]

    budget = improve.budget(metric)
    source = open_data(samples, Graph(net.float_model).inputs, batch_size=EVALUATION_BATCH)
    if score is None:
        score = OutputReference(net.float_model, source, threads, metric)
    result = fallback(
        net.float_model, build, samples, budget, base=Built(qdq, plan), threads=threads,
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
    check = check or (lambda f, models, b: [quick_check(f, q, b, threads) for q in models])
    found = [_worst_slice(c) for c in check(float_model, _distinct(before, after), batches)]
    first, second = found[0], found[-1]
    return (
        f"worst output slice (§A.9) on up to {SLICE_NOTE_SAMPLES} calibration samples: "
        f"before {first}; after {second}"
    )


def _distinct(before: onnx.ModelProto, after: onnx.ModelProto) -> list[onnx.ModelProto]:
    return [before] if after is before else [before, after]


def _worst_slice(check: QuickCheck | None) -> str:
    if check is None:
        return "-"
    worst = min(check.outputs, key=lambda output: output.worst_slice_sqnr_db)
    collapsed = " (collapsed)" if any(output.collapsed for output in check.outputs) else ""
    return f"{worst.worst_slice_sqnr_db:.2f} dB on {worst.name!r}{collapsed}"
