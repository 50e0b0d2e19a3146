"""``fallback``: return the most harmful layers to float until an accuracy budget holds.

docs/numerics.md §R.7-§R.10. The budget is a maximum drop of top-1 agreement (or of a user
metric) and/or a minimum SQNR of the first output. The returnable nodes are ranked once
(``fallback_rank``, §R.8); the search (``fallback_search``, §R.10) then finds how many of the
top-ranked nodes the budget needs, rebuilding the model by the caller's ``build(excluded)``
a number of times logarithmic in the number of candidates. The report says what that cost
in parameter bytes and int8 latency, and how many rebuilds it took.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from eightbit.analysis.latency import LatencyRatio
from eightbit.calibrate import open_data
from eightbit.calibrate.data import DataLike
from eightbit.errors import ConfigError
from eightbit.graph import Graph
from eightbit.improve.budget import Budget, Measured, Score
from eightbit.improve.fallback.cost import FallbackCost, fallback_cost, one_sample
from eightbit.improve.fallback.rank import (
    RANKINGS,
    Build,
    Built,
    Ranking,
    folded_clamps,
    rank_nodes,
    ranking_rebuilds,
    resolve_ranking,
    returnable_nodes,
)
from eightbit.improve.fallback.search import Probe, Searched, rebuild_bound, search_prefix
from eightbit.improve.measure import OutputReference, SqnrsOn
from eightbit.improve.progress import layer_progress
from eightbit.plan import QuantPlan
from eightbit.steps import LayerGain, StepReport
from eightbit.validators import require_int

__all__ = ["Budget", "Build", "Built", "FallbackResult", "Measured", "fallback", "rank_nodes"]


@dataclass(frozen=True)
class FallbackResult:
    """The model fallback settled on, what it measured, and how it got there.

    ``returned``: the ranked nodes returned to float, most harmful first;
    ``excluded``: every node the model keeps in float for it (``returned`` and the Relu/Clip
    each had folded into it), as passed to ``build``. ``met``:
    whether the budget holds (within the latency cap, if any); ``message`` says why it
    stopped. ``ranking``: every candidate, most harmful first. ``passed_over``: the nodes
    left in int8 because their return would pass ``max_latency``; ``latency_ratio``: the
    final model's int8/float latency when a cap was given (else None). ``rebuilds``: the
    calls of ``build`` it made (ranking and search), at most ``rebuild_bound`` (eq. R.13).
    """

    quantized: Built
    returned: tuple[str, ...]
    excluded: tuple[str, ...]
    met: bool
    measured: Measured
    ranking: tuple[str, ...]
    cost: FallbackCost
    report: StepReport
    message: str
    passed_over: tuple[str, ...] = ()
    latency_ratio: float | None = None
    rebuilds: int = 0
    rebuild_bound: int = 0

    @property
    def model(self) -> onnx.ModelProto:
        return self.quantized.model

    @property
    def plan(self) -> QuantPlan:
        return self.quantized.plan


def fallback(
    float_model: onnx.ModelProto,
    build: Build,
    data: DataLike,
    budget: Budget,
    *,
    base: Built | None = None,
    ranking: Ranking = "auto",
    rank_samples: int = 64,
    max_steps: int | None = None,
    latency_runs: int = 30,
    batch_size: int = 16,
    threads: int | None = None,
    progress: bool = False,
    latency: Callable[[onnx.ModelProto], float] | None = None,
    prune_steps: int = 4,
    max_passed_over: int = 4,
    score: Score | None = None,
    rank_sqnrs: SqnrsOn | None = None,
) -> FallbackResult:
    """Return the fewest top-ranked nodes of the int8 model to float for ``budget`` to hold.

    ``build(excluded)`` makes the int8 model with the nodes ``excluded`` kept in float
    (the pipeline re-plans with them in ``QuantConfig.exclude``); ``base`` is the model
    with none excluded when the caller has it already (else it is built). ``data`` is the
    evaluation data (anything ``open_data`` reads). ``ranking`` (§R.8, ``rank_nodes``)
    orders the candidates on ``rank_samples`` samples; the search (§R.10) then tries
    prefixes of that order (1, 3, 7, ... nodes, then bisection), and ``prune_steps``
    rebuilds try to return nodes of the prefix found to int8. ``max_steps`` caps the nodes
    returned; ``latency_runs``: timed runs per model for the cost (0: none). ``met`` is
    False when no allowed prefix meets the budget (the model keeps at least one returnable
    node in int8). With ``budget.max_latency``, each model is timed by ``latency`` (its
    int8/float latency ratio; default ``LatencyRatio``) before it is measured; a node whose
    return passes the cap is passed over (kept int8), at most ``max_passed_over`` of them.
    ``score``: how a model is measured against the budget (the caller's evaluator); by
    default an ``OutputReference`` of ``float_model`` on ``data`` with ``budget.metric``.
    ``rank_sqnrs``: how the ``build`` ranking scores its candidates (default: here).
    """
    _check_options(ranking, rank_samples, max_steps, latency_runs, prune_steps, max_passed_over)
    started = time.perf_counter()
    graph = Graph(float_model)
    source = open_data(data, graph.inputs, batch_size=batch_size)
    evaluate = score or OutputReference(float_model, source, threads, budget.metric)
    calls = _CountedBuild(build)
    first = base if base is not None else calls(frozenset())
    first_measured = evaluate(first.model)
    if budget.max_latency is not None and latency is None:
        latency = LatencyRatio(float_model, one_sample(source, graph.inputs))
    first_ratio = None if latency is None else latency(first.model)
    start = Probe(
        (), _Model(first, first_measured, first_ratio), slow=False,
        meets=first_measured.meets(budget), sqnr_db=first_measured.sqnr_db,
    )  # fmt: skip
    searched = Searched(start, (), (), None)
    order: tuple[str, ...] = ()
    used = ranking
    bound = calls.count
    message = "the budget holds without returning any node to float"
    capped = budget.max_latency is not None and first_ratio is not None
    if capped and first_ratio > budget.max_latency:  # type: ignore[operator]
        message = (
            f"the int8 model already runs at {first_ratio:.3f}x the float latency, above "
            f"max_latency {budget.max_latency:g}: returning nodes to float would only slow it"
        )
    elif not first_measured.meets(budget):
        used = resolve_ranking(ranking, first.plan, build)
        returnable = returnable_nodes(first.plan)
        passes = max_passed_over if capped else 0
        bound += ranking_rebuilds(used, first.plan, build)
        bound += rebuild_bound(len(returnable), passes, prune_steps)
        with layer_progress(bound, progress, "fallback rebuilds") as advance:
            calls.advance = advance
            order = rank_nodes(
                float_model, first, source, used, rank_samples,
                build=calls, threads=threads, progress=progress, sqnrs=rank_sqnrs,
            )  # fmt: skip
            trial = _Trial(calls, evaluate, folded_clamps(first.plan), budget, latency)
            searched = search_prefix(
                order, start, trial, keep_one=set(returnable) <= set(order),
                max_nodes=max_steps, pass_overs=passes, prune=prune_steps,
            )  # fmt: skip
        returned = searched.final.returned
        message = (
            f"budget not met ({searched.final.built.measured.describe()}): {searched.stop}"
            if searched.stop is not None
            else f"the budget holds after returning {len(returned)} node(s) to float"
        )
    final: _Model = searched.final.built
    returned = searched.final.returned
    ratio = final.ratio
    within = ratio is None or budget.max_latency is None or ratio <= budget.max_latency
    met = final.measured.meets(budget) and within
    cost = fallback_cost(
        float_model, first.model, final.built.model, returned, source, latency_runs
    )
    notes = [
        f"budget: {budget.describe()}; {message}",
        f"before: {first_measured.describe()}; after: {final.measured.describe()}; "
        f"{_sampling(final.measured, evaluate.samples)}",
        _returned_note(returned),
        f"cost: {cost.describe()}",
        f"rebuilds: {calls.count} (bound {bound}); ranking {used!r} of {len(order)} "
        f"candidate(s), then {len(searched.probes)} model(s) tried along it",
        *_cap_note(budget, ratio, searched.passed_over),
    ]
    report = StepReport(
        name="fallback",
        seconds=time.perf_counter() - started,
        before_db=first_measured.sqnr_db,
        after_db=final.measured.sqnr_db,
        layers=_gains(returned, searched.probes, first_measured.sqnr_db, final.measured),
        notes=tuple(notes),
    )
    return FallbackResult(
        quantized=final.built,
        returned=returned,
        excluded=_with_folded(returned, folded_clamps(first.plan)),
        met=met,
        measured=final.measured,
        ranking=order,
        cost=cost,
        report=report,
        message=message,
        passed_over=searched.passed_over,
        latency_ratio=ratio,
        rebuilds=calls.count,
        rebuild_bound=bound,
    )


@dataclass(frozen=True)
class _Model:
    """A rebuilt model, what it measured (None: over the latency cap) and its latency ratio."""

    built: Built
    measured: Measured
    ratio: float | None


class _CountedBuild:
    """The caller's ``build``, counting its calls and advancing the progress bar."""

    def __init__(self, build: Build) -> None:
        self.build, self.count = build, 0
        self.advance: Callable[[str], None] = lambda name: None

    def __call__(self, excluded: frozenset[str]) -> Built:
        built = self.build(excluded)
        self.count += 1
        self.advance(f"{len(excluded)} node(s) in float")
        return built


class _Trial:
    """Builds the model with ``nodes`` (and their folded clamps) in float, times it against
    the cap, and measures it unless it is too slow (§R.10)."""

    def __init__(
        self,
        build: _CountedBuild,
        evaluate: Score,
        folded: dict[str, str],
        budget: Budget,
        latency: Callable[[onnx.ModelProto], float] | None,
    ) -> None:
        self.build, self.evaluate, self.folded = build, evaluate, folded
        self.budget, self.latency = budget, latency

    def __call__(self, nodes: tuple[str, ...]) -> Probe:
        built = self.build(frozenset(_with_folded(nodes, self.folded)))
        ratio = None
        cap = self.budget.max_latency
        if self.latency is not None and cap is not None:
            ratio = self.latency(built.model)
            if ratio > cap:
                return Probe(nodes, None, slow=True, meets=False)
        measured = self.evaluate(built.model)
        model = _Model(built, measured, ratio)
        return Probe(nodes, model, slow=False, meets=measured.meets(self.budget),
                     sqnr_db=measured.sqnr_db)  # fmt: skip


def _with_folded(nodes: Sequence[str], folded: dict[str, str]) -> tuple[str, ...]:
    """``nodes`` and the Relu/Clip folded into each, as ``build`` keeps them in float."""
    return tuple(
        name for node in nodes for name in ([node, folded[node]] if node in folded else [node])
    )


def _gains(
    returned: Sequence[str], probes: Sequence[Probe], before_db: float, final: Measured
) -> tuple[LayerGain, ...]:
    """One gain per returned node: the output SQNR of the measured prefixes of ``returned``
    just short of it and just including it (nodes returned in one group share its gain)."""
    points = {0: before_db}
    for probe in probes:
        count = len(probe.returned)
        if probe.sqnr_db is not None and tuple(returned[:count]) == probe.returned:
            points[count] = probe.sqnr_db
    points[len(returned)] = final.sqnr_db
    counts = sorted(points)
    gains = []
    for index, node in enumerate(returned, start=1):
        below = max(count for count in counts if count < index)
        above = min(count for count in counts if count >= index)
        gains.append(LayerGain(node, points[below], points[above]))
    return tuple(gains)


def _cap_note(budget: Budget, ratio: float | None, passed: Sequence[str]) -> list[str]:
    if budget.max_latency is None or ratio is None:
        return []
    return [
        f"latency cap {budget.max_latency:g}x float: the model runs at {ratio:.3f}x "
        f"(interleaved medians); {len(passed)} node(s) passed over as too slow in float"
    ]


# The report names this many returned nodes; the plan's step lists every one (its layers).
_NAMED = 8


def _returned_note(returned: Sequence[str]) -> str:
    if not returned:
        return "returned to float: none"
    names = ", ".join(returned[:_NAMED])
    more = len(returned) - _NAMED
    if more > 0:
        names += f" and {more} more (the plan's fallback step lists each with its gain)"
    return f"returned to float ({len(returned)}): {names}"


def _sampling(measured: Measured, samples: int) -> str:
    """On how many samples the budget was judged, and how far an agreement on that many
    samples may be from the agreement on other data (one standard error)."""
    text = f"measured on {samples} samples"
    if measured.agreement is not None and samples > 0:
        share = measured.agreement
        error = math.sqrt(max(share * (1.0 - share), 1.0 / samples) / samples)
        text += f" (standard error of the agreement: {error:.3f})"
    return text


def _check_options(
    ranking: str,
    rank_samples: int,
    max_steps: int | None,
    latency_runs: int,
    prune_steps: int,
    max_passed_over: int,
) -> None:
    if ranking not in RANKINGS:
        raise ConfigError(f"'ranking' must be one of {list(RANKINGS)} (got {ranking!r})")
    for name, value, least in (
        ("rank_samples", rank_samples, 1),
        ("latency_runs", latency_runs, 0),
        ("max_steps", 0 if max_steps is None else max_steps, 0),
        ("prune_steps", prune_steps, 0),
        ("max_passed_over", max_passed_over, 0),
    ):
        require_int(name, value, least)
