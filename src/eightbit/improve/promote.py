"""Mixed precision to a budget: activation tensors promoted to int16 (docs/numerics.md §R.11).

Where the fallback (``eightbit.improve.fallback``) returns nodes to float, ``promote`` keeps
every node integer and widens the activations that cost the most accuracy to 16 bits (their
Q/DQ pairs become int16, §Q17; weights stay int8). The candidates are ranked once by their
measured gain per unit of cost (``promote_cost``, per target), then the fallback's search
(``search_prefix``, §R.10) finds the shortest prefix of that order that meets the budget,
so the number of rebuilds grows with the logarithm of the number of candidates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import onnx

from eightbit.analysis.models import load_pair
from eightbit.analysis.side_by_side import own_sqnrs
from eightbit.calibrate import open_data
from eightbit.calibrate.data import DataLike
from eightbit.graph import Graph
from eightbit.improve.budget import Budget, Measured, Score
from eightbit.improve.fallback.rank import BUILD_RANKING_LIMIT, Build, Built
from eightbit.improve.fallback.search import Probe, rebuild_bound, search_prefix
from eightbit.improve.measure import OutputReference
from eightbit.improve.progress import layer_progress
from eightbit.improve.promote_cost import PromotionCost
from eightbit.steps import StepReport

__all__ = ["PromotionResult", "best_probe", "gain_order", "promote"]


@dataclass(frozen=True)
class PromotionResult:
    """The model the promotion settled on: the tensors ``promoted`` to int16 (in ranking
    order), whether the budget holds (``met``), what the final model measured, the
    ranking, each promoted tensor's cost, and the rebuilds made against the bound (R.17)."""

    quantized: Built
    promoted: tuple[str, ...]
    met: bool
    measured: Measured
    ranking: tuple[str, ...]
    costs: tuple[PromotionCost, ...]
    report: StepReport
    message: str
    rebuilds: int = 0
    rebuild_bound: int = 0
    latency_ratio: float | None = None

    @property
    def model(self) -> onnx.ModelProto:
        return self.quantized.model


def promote(
    float_model: onnx.ModelProto,
    build: Build,
    data: DataLike,
    budget: Budget,
    costs: Mapping[str, PromotionCost],
    *,
    base: Built,
    target: str,
    ranking: str = "auto",
    rank_samples: int = 64,
    batch_size: int = 16,
    threads: int | None = None,
    progress: bool = False,
    score: Score | None = None,
    latency: Callable[[onnx.ModelProto], float] | None = None,
    prune_steps: int = 4,
    max_passed_over: int = 4,
) -> PromotionResult:
    """Promote the fewest top-ordered tensors of ``costs`` to int16 for ``budget`` to hold.

    ``build(promoted)`` makes the model with ``promoted`` int16; ``base`` is the model with
    none. ``ranking``: ``build`` (one rebuild per candidate: the measured gain), ``own``
    (one pass: the noise the tensor's own rounding adds) or ``auto`` (``build`` up to
    ``BUILD_RANKING_LIMIT`` candidates). With ``budget.max_latency``, ``latency`` times each
    model (its int8/float ratio) and a tensor whose promotion passes the cap is passed over.
    """
    started = time.perf_counter()
    graph = Graph(float_model)
    source = open_data(data, graph.inputs, batch_size=batch_size)
    evaluate = score or OutputReference(float_model, source, threads, budget.metric)
    calls = _Counted(build)
    first = evaluate(base.model)
    capped = budget.max_latency is not None and latency is not None
    ratio = latency(base.model) if capped and latency is not None else None
    start = Probe((), _Model(base, first, ratio), slow=False, meets=first.meets(budget),
                  sqnr_db=first.sqnr_db)  # fmt: skip
    candidates = list(costs)
    used = _resolve(ranking, len(candidates))
    passes = max_passed_over if capped else 0
    bound = (len(candidates) if used == "build" else 0) + rebuild_bound(
        len(candidates), passes, prune_steps
    )
    order: tuple[str, ...] = ()
    final, message, probes = start, "the budget holds with every activation 8-bit", 0
    too_slow = ratio is not None and budget.max_latency is not None and ratio > budget.max_latency
    if too_slow:  # promotion only adds float work on ONNX Runtime (§Q17)
        message = (
            f"the 8-bit model already runs at {ratio:.3f}x the float latency, above "
            f"max_latency {budget.max_latency:g}: promoting tensors would only slow it"
        )
    elif not start.meets and candidates:
        with layer_progress(bound, progress, "int16 promotion rebuilds") as advance:
            calls.advance = advance
            gains = _gains(used, float_model, base, candidates, calls, data, rank_samples, threads)
            order = gain_order(gains, costs)
            trial = _Trial(calls, evaluate, budget, latency if capped else None)
            searched = search_prefix(order, start, trial, keep_one=False, max_nodes=None,
                                     pass_overs=passes, prune=prune_steps)  # fmt: skip
        final, probes = searched.final, len(searched.probes)
        if searched.stop is None:
            message = f"the budget holds with {len(final.returned)} tensor(s) int16"
        else:  # the search settles on its longest failing prefix: keep the best measured
            final = best_probe([start, *searched.probes], budget)
            message = (
                f"budget not met; kept the best model measured ({len(final.returned)} "
                f"tensor(s) int16, {final.built.measured.describe()}): "
                + searched.stop.replace("node(s)", "tensor(s)").replace("float", "int16")
            )
    model: _Model = final.built
    promoted = tuple(final.returned)
    chosen = tuple(costs[name] for name in promoted)
    notes = [
        f"budget: {budget.describe()}; {message}",
        f"before: {first.describe()}; after: {model.measured.describe()}",
        f"ranking {used!r} of {len(order)} candidate(s) by gain per cost ({target}); "
        f"rebuilds: {calls.count} (bound {bound}), {probes} model(s) tried along it",
        *_promoted_notes(chosen, target),
    ]
    report = StepReport("int16_promotion", time.perf_counter() - started, first.sqnr_db,
                        model.measured.sqnr_db, notes=tuple(notes))  # fmt: skip
    within = model.ratio is None or budget.max_latency is None or model.ratio <= budget.max_latency
    return PromotionResult(
        quantized=model.built, promoted=promoted, met=model.measured.meets(budget) and within,
        measured=model.measured, ranking=order, costs=chosen, report=report, message=message,
        rebuilds=calls.count, rebuild_bound=bound, latency_ratio=model.ratio,
    )  # fmt: skip


def best_probe(probes: Sequence[Probe], budget: Budget) -> Probe:
    """The measured probe that holds ``budget`` best (eq. R.18): the budget held, then the
    smaller metric drop, then the higher output SQNR, then the fewer tensors promoted; the
    first such probe on a tie."""

    def key(probe: Probe) -> tuple[bool, float, float, int]:
        measured: Measured = probe.built.measured
        drop = measured.metric_drop
        if drop is None:
            drop = 0.0 if measured.agreement is None else 1.0 - measured.agreement
        return (measured.meets(budget), -drop, measured.sqnr_db, -len(probe.returned))

    measured = [probe for probe in probes if probe.built is not None and not probe.slow]
    return max(measured, key=key)


def gain_order(gains: Mapping[str, float], costs: Mapping[str, PromotionCost]) -> tuple[str, ...]:
    """The candidates by gain per unit of cost, highest first (eq. R.14): a tensor whose
    promotion measured no gain goes last, by gain; ties keep the candidates' order."""
    keys = []
    for index, (name, gain) in enumerate(gains.items()):
        cost = max(costs[name].relative, 1e-12)
        keys.append(((0, -gain / cost) if gain > 0 else (1, -gain), index, name))
    return tuple(name for _, _, name in sorted(keys))


def _resolve(ranking: str, candidates: int) -> str:
    if ranking == "auto":
        return "build" if candidates <= BUILD_RANKING_LIMIT else "own"
    return ranking


def _gains(
    ranking: str,
    float_model: onnx.ModelProto,
    base: Built,
    candidates: Sequence[str],
    build: Callable[[frozenset[str]], Built],
    data: DataLike,
    samples: int,
    threads: int | None,
) -> dict[str, float]:
    """Each candidate's gain on ``samples`` samples: the fall of the first output's
    noise-to-signal ratio with it alone promoted (``build``), or its own rounding's ratio
    (``own``) (eq. R.14)."""
    graph = Graph(float_model)
    source = open_data(data, graph.inputs, batch_size=16, limit=samples)
    if ranking == "build":  # on ``samples`` samples, as the fallback ranks (§R.8)
        reference = OutputReference(float_model, [dict(batch) for batch in source], threads)
        before = _noise(reference.sqnr(base.model))
        return {t: before - _noise(reference.sqnr(build(frozenset([t])).model))
                for t in candidates}  # fmt: skip
    pair = load_pair(float_model, base.model, plan=base.plan, find_plan=False)
    own = own_sqnrs(pair, source, threads=threads)
    return {t: _noise(own.get(t, math.inf)) for t in candidates}


def _noise(sqnr_db: float) -> float:
    """Noise-to-signal power ratio of an SQNR (1 for an unmeasurable one)."""
    if math.isnan(sqnr_db):
        return 1.0
    return 0.0 if sqnr_db == math.inf else 10.0 ** (-sqnr_db / 10.0)


def _promoted_notes(costs: Sequence[PromotionCost], target: str) -> list[str]:
    return [f"promoted to int16: {cost.describe(target)}" for cost in costs]


@dataclass(frozen=True)
class _Model:
    built: Built
    measured: Measured
    ratio: float | None


class _Counted:
    """The caller's ``build``, counting its calls and advancing the progress bar."""

    def __init__(self, build: Build) -> None:
        self.build, self.count = build, 0
        self.advance: Callable[[str], None] = lambda name: None

    def __call__(self, promoted: frozenset[str]) -> Built:
        built = self.build(promoted)
        self.count += 1
        self.advance(f"{len(promoted)} tensor(s) int16")
        return built


class _Trial:
    """Builds the model with ``tensors`` int16, times it against the cap, and measures it
    unless it is too slow (the fallback's ``_Trial`` for promotion)."""

    def __init__(
        self,
        build: _Counted,
        evaluate: Score,
        budget: Budget,
        latency: Callable[[onnx.ModelProto], float] | None,
    ) -> None:
        self.build, self.evaluate, self.budget, self.latency = build, evaluate, budget, latency

    def __call__(self, tensors: tuple[str, ...]) -> Probe:
        built = self.build(frozenset(tensors))
        ratio = None
        if self.latency is not None and self.budget.max_latency is not None:
            ratio = self.latency(built.model)
            if ratio > self.budget.max_latency:
                return Probe(tensors, None, slow=True, meets=False)
        measured = self.evaluate(built.model)
        return Probe(tensors, _Model(built, measured, ratio), slow=False,
                     meets=measured.meets(self.budget), sqnr_db=measured.sqnr_db)  # fmt: skip
