"""``fallback``: return the most harmful layers to float until an accuracy budget holds.

docs/numerics.md §R.7-§R.9. The budget is a maximum drop of top-1 agreement (or
of a user metric) and/or a minimum SQNR of the first output. Quantized nodes are ranked by
the validate analysis (§A.3): the what-if "this activation and its producer's weights back
in float", or the activation's own SQNR. The most harmful node is excluded, the model is
rebuilt by the caller's ``build(excluded)`` and measured again, one node at a time, until
the budget holds. The report says what that cost in parameter bytes and int8 latency.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import onnx

from eightbit.analysis.latency import LatencyRatio
from eightbit.analysis.layers import rank
from eightbit.analysis.models import DataLike, load_pair
from eightbit.analysis.outputs import Metric, OutputTally
from eightbit.analysis.runner import measure, measure_variants
from eightbit.analysis.variants import without_quantization
from eightbit.calibrate import DataSource, open_data
from eightbit.errors import ConfigError
from eightbit.graph import Graph, make_session
from eightbit.improve.fallback_cost import FallbackCost, fallback_cost, one_sample
from eightbit.ops import lookup
from eightbit.plan import QuantPlan
from eightbit.steps import LayerGain, StepReport

Ranking = Literal["build", "what_if", "own"]
RANKINGS: tuple[Ranking, ...] = ("build", "what_if", "own")
# Slack when comparing a measured fraction with a budget given in decimal: 1 - 0.05 must
# accept an agreement of 380/400 although the two floats differ in the last bit.
_SLACK = 1e-9


class Built(Protocol):
    """What ``build`` returns: a QDQ model and its plan (``QuantizedModel`` is one)."""

    @property
    def model(self) -> onnx.ModelProto: ...

    @property
    def plan(self) -> QuantPlan: ...


Build = Callable[[frozenset[str]], Built]


@dataclass(frozen=True)
class Budget:
    """What the int8 model must keep of the float model's behaviour (§R.7).

    ``max_drop``: largest drop of top-1 agreement (a fraction: 0.01 is one point), or of
    ``metric(float_output, int8_output)`` (higher is better) from ``metric(f, f)`` when a
    metric is given. ``min_sqnr``: smallest SQNR of the first output, in dB. Every given
    condition must hold. ``max_latency``: the largest int8/float latency ratio the model
    may reach (one thread, batch 1): a limit on the search, not a goal (R.9).
    """

    max_drop: float | None = None
    min_sqnr: float | None = None
    metric: Metric | None = None
    max_latency: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is None and self.min_sqnr is None:
            raise ConfigError("a fallback budget needs 'max_drop' or 'min_sqnr' (or both)")
        if self.max_drop is not None:
            if not _finite(self.max_drop) or self.max_drop < 0:
                raise ConfigError(f"'max_drop' must be a number >= 0 (got {self.max_drop!r})")
            if self.metric is None and self.max_drop > 1:
                raise ConfigError(
                    f"'max_drop' is a fraction of top-1 agreement in [0, 1] (got "
                    f"{self.max_drop!r}); for 2 points write 0.02"
                )
        if self.min_sqnr is not None and not _finite(self.min_sqnr):
            raise ConfigError(f"'min_sqnr' must be a finite number of dB (got {self.min_sqnr!r})")
        if self.metric is not None:
            if not callable(self.metric):
                raise ConfigError(f"'metric' must be callable (got {type(self.metric).__name__})")
            if self.max_drop is None:
                raise ConfigError("a fallback 'metric' needs 'max_drop', the drop it may take")
        if self.max_latency is not None and not (
            _finite(self.max_latency) and self.max_latency > 0
        ):
            raise ConfigError(
                f"'max_latency' must be a ratio > 0 of int8 to float latency (got "
                f"{self.max_latency!r})"
            )

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            what = "metric" if self.metric is not None else "top-1 agreement"
            parts.append(f"{what} drop <= {self.max_drop:g}")
        if self.min_sqnr is not None:
            parts.append(f"SQNR >= {self.min_sqnr:g} dB")
        text = " and ".join(parts)
        if self.max_latency is not None:
            text += f", int8 latency <= {self.max_latency:g}x float"
        return text


@dataclass(frozen=True)
class Measured:
    """The first output of one int8 model against the float model (None: not measurable)."""

    sqnr_db: float
    agreement: float | None
    metric_drop: float | None = None

    def meets(self, budget: Budget) -> bool:
        if budget.min_sqnr is not None and not self.sqnr_db >= budget.min_sqnr - _SLACK:
            return False
        if budget.max_drop is None:
            return True
        if budget.metric is not None:
            return self.metric_drop is not None and self.metric_drop <= budget.max_drop + _SLACK
        if self.agreement is None:
            raise ConfigError(
                "'max_drop' without a metric is a drop of top-1 agreement, which needs a "
                "classification output of shape (samples, classes); give a metric or 'min_sqnr'"
            )
        return 1.0 - self.agreement <= budget.max_drop + _SLACK

    def describe(self) -> str:
        parts = [f"SQNR {self.sqnr_db:.2f} dB"]
        if self.agreement is not None:
            parts.append(f"top-1 agreement {self.agreement:.4f}")
        if self.metric_drop is not None:
            parts.append(f"metric drop {self.metric_drop:.4g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class FallbackResult:
    """The model fallback settled on, what it measured, and how it got there.

    ``returned``: the ranked nodes returned to float, in the order they were returned;
    ``excluded``: every node the model keeps in float for it (``returned`` and the Relu/Clip
    each had folded into it), as passed to ``build``. ``met``:
    whether the budget holds (within the latency cap, if any); ``message`` says why it
    stopped. ``ranking``: every candidate, most harmful first. ``passed_over``: the nodes
    left in int8 because their return would pass ``max_latency``; ``latency_ratio``: the
    final model's int8/float latency when a cap was given (else None).
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
    ranking: Ranking = "build",
    rank_samples: int = 64,
    max_steps: int | None = None,
    latency_runs: int = 30,
    batch_size: int = 16,
    threads: int | None = None,
    progress: bool = False,
    latency: Callable[[onnx.ModelProto], float] | None = None,
) -> FallbackResult:
    """Return nodes of the int8 model to float, most harmful first, until ``budget`` holds.

    ``build(excluded)`` makes the int8 model with the nodes ``excluded`` kept in float
    (the pipeline re-plans with them in ``QuantConfig.exclude``); ``base`` is the model
    with none excluded when the caller has it already (else it is built). ``data`` is the
    evaluation data (anything ``open_data`` reads). ``ranking`` (§R.8): ``build`` scores
    each candidate by building the model with it alone in float (one ``build`` per
    candidate, on ``rank_samples`` samples), ``what_if`` by the validate analysis'
    what-if models, ``own`` by its activation's own SQNR. ``max_steps`` caps the rebuilds
    of the loop; ``latency_runs``: timed runs per model for the cost (0: none). Stops at
    the first model that meets the budget, or when returning one more node would leave
    nothing in int8 (then ``met`` is False). With ``budget.max_latency``, each model is
    timed by ``latency`` (its int8/float latency ratio; default ``LatencyRatio``) before it
    is measured, and a node whose return would pass the cap is passed over.
    """
    _check_options(ranking, rank_samples, max_steps, latency_runs)
    started = time.perf_counter()
    graph = Graph(float_model)
    source = open_data(data, graph.inputs, batch_size=batch_size)
    evaluate = _Evaluator(float_model, source, budget.metric, threads)
    current = base if base is not None else build(frozenset())
    measured = evaluate(current.model)
    first, first_measured = current, measured
    if budget.max_latency is not None and latency is None:
        latency = LatencyRatio(float_model, one_sample(source, graph))
    ratio = None if latency is None else latency(current.model)
    returned: list[str] = []
    passed: list[str] = []
    excluded: list[str] = []
    order: tuple[str, ...] = ()
    gains: list[LayerGain] = []
    message = "the budget holds without returning any node to float"
    if ratio is not None and budget.max_latency is not None and ratio > budget.max_latency:
        message = (
            f"the int8 model already runs at {ratio:.3f}x the float latency, above "
            f"max_latency {budget.max_latency:g}: returning nodes to float would only slow it"
        )
    elif not measured.meets(budget):
        quantized = _returnable(current.plan)
        # A Relu/Clip folded into a node goes back to float with it (§R.9). The planner now
        # keeps a clamp after a float node float by itself (§Q6); naming it here too keeps
        # the exclude list the plan records explicit.
        folded = _folded(current.plan)
        order = rank_nodes(
            float_model,
            current,
            source,
            ranking,
            rank_samples,
            build=build,
            threads=threads,
            progress=progress,
        )
        while not measured.meets(budget):
            stop = _stop_reason(order, returned, quantized, max_steps, passed)
            if stop is not None:
                message = f"budget not met ({measured.describe()}): {stop}"
                break
            node = next(n for n in order if n not in returned and n not in passed)
            trial = [*excluded, *([node, folded[node]] if node in folded else [node])]
            candidate = build(frozenset(trial))
            if latency is not None and budget.max_latency is not None:
                trial_ratio = latency(candidate.model)
                if trial_ratio > budget.max_latency:
                    passed.append(node)  # too slow in float: try the next one
                    continue
                ratio = trial_ratio
            returned.append(node)
            excluded, current = trial, candidate
            before = measured
            measured = evaluate(current.model)
            gains.append(LayerGain(node, before.sqnr_db, measured.sqnr_db))
        else:
            message = f"the budget holds after returning {len(returned)} node(s) to float"
    within = ratio is None or budget.max_latency is None or ratio <= budget.max_latency
    met = measured.meets(budget) and within
    cost = fallback_cost(float_model, first.model, current.model, returned, source, latency_runs)
    notes = [
        f"budget: {budget.describe()}; {message}",
        f"before: {first_measured.describe()}; after: {measured.describe()}; "
        f"{_sampling(measured, evaluate.samples)}",
        _returned_note(returned),
        f"cost: {cost.describe()}",
    ]
    if budget.max_latency is not None and ratio is not None:
        notes.append(
            f"latency cap {budget.max_latency:g}x float: the model runs at {ratio:.3f}x "
            f"(interleaved medians); {len(passed)} node(s) passed over as too slow in float"
        )
    report = StepReport(
        name="fallback",
        seconds=time.perf_counter() - started,
        before_db=first_measured.sqnr_db,
        after_db=measured.sqnr_db,
        layers=tuple(gains),
        notes=tuple(notes),
    )
    return FallbackResult(
        quantized=current,
        returned=tuple(returned),
        excluded=tuple(excluded),
        met=met,
        measured=measured,
        ranking=order,
        cost=cost,
        report=report,
        message=message,
        passed_over=tuple(passed),
        latency_ratio=ratio,
    )


def _rank_by_build(
    float_model: onnx.ModelProto,
    plan: QuantPlan,
    source: DataSource,
    build: Build,
    threads: int | None,
) -> tuple[str, ...]:
    """Returnable nodes by the first output's SQNR with each alone back in float (§R.8).

    Each score is a real ``build``: exactly the model the loop would make, whatever the
    export does around a float node.
    """
    evaluate = _Evaluator(float_model, source, None, threads)
    folded = _folded(plan)
    scores = []
    for index, node in enumerate(_returnable(plan)):
        alone = frozenset([node, folded[node]] if node in folded else [node])
        scores.append((-evaluate(build(alone).model).sqnr_db, index, node))
    return tuple(node for _, _, node in sorted(scores))


def rank_nodes(
    float_model: onnx.ModelProto,
    base: Built,
    data: DataLike,
    ranking: Ranking = "build",
    samples: int = 64,
    *,
    build: Build | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> tuple[str, ...]:
    """Quantized nodes a fallback can return, most harmful first (§R.8), on ``samples``.

    ``build``: by the first output's SQNR of ``build({node})`` (the node and its folded
    Relu/Clip in float), highest first. ``what_if``: by the same SQNR in the validate
    analysis' what-if model (the node's activation and weights back in float), ties by the
    activation's own SQNR; ``own``: by own SQNR alone. The last two rank the nodes that
    compute a quantized activation.
    """
    graph = Graph(float_model)
    source = open_data(data, graph.inputs, batch_size=16, limit=samples)
    if ranking == "build":
        if build is None:
            raise ConfigError("ranking='build' needs the 'build' function")
        return _rank_by_build(float_model, base.plan, source, build, threads)
    pair = load_pair(float_model, base.model, plan=base.plan, find_plan=False)
    returnable = set(_returnable(base.plan))
    measured = measure(pair, source, compare=False, threads=threads, progress=progress)
    own = {report.name: report.sqnr_own_db for report in measured.activations}
    candidates = [
        activation
        for activation in pair.qdq.activations
        if activation.producer in returnable and activation.name in own
    ]
    if ranking == "own":
        names = {activation.name for activation in candidates}
        ordered = rank(tuple(r for r in measured.activations if r.name in names))
        return tuple(dict.fromkeys(str(report.node) for report in ordered))
    variants = [
        without_quantization(pair.int8_model, activation, pair.qdq, pair.float_graph)
        for activation in candidates
    ]
    results = measure_variants(pair, source, variants, threads=threads, progress=progress)
    scored = sorted(
        zip(candidates, results, strict=True),
        key=lambda item: (-item[1][0].sqnr_db, _or_inf(own[item[0].name])),
    )
    return tuple(dict.fromkeys(str(activation.producer) for activation, _ in scored))


class _Evaluator:
    """Measures int8 models against float outputs computed once on the evaluation data."""

    def __init__(
        self,
        float_model: onnx.ModelProto,
        source: DataSource,
        metric: Metric | None,
        threads: int | None,
    ) -> None:
        self.source, self.metric, self.threads = source, metric, threads
        self.output = float_model.graph.output[0].name
        session = make_session(float_model, threads=threads)
        self.reference = [np.asarray(session.run([self.output], b)[0]) for b in source]
        self.samples = sum(len(reference) for reference in self.reference)
        self.float_score = None
        if metric is not None:
            whole = np.concatenate(self.reference)
            self.float_score = _score_value(metric(whole, whole))

    def __call__(self, model: onnx.ModelProto) -> Measured:
        session = make_session(model, threads=self.threads)
        tally = OutputTally(self.output, keep=self.metric is not None)
        batches = iter(self.source)
        for reference in self.reference:
            batch = next(batches)
            tally.update(reference, np.asarray(session.run([self.output], batch)[0]))
        metrics = {"budget": self.metric} if self.metric is not None else None
        result = tally.result(metrics)
        drop = None
        if self.float_score is not None:
            drop = self.float_score - _score_value(result.custom["budget"])
        return Measured(result.sqnr_db, result.top1_agreement, drop)


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


def _stop_reason(
    order: Sequence[str],
    returned: Sequence[str],
    quantized: Iterable[str],
    max_steps: int | None,
    passed: Sequence[str] = (),
) -> str | None:
    """Why the loop cannot return another node, or None when it can."""
    remaining = [node for node in order if node not in returned and node not in passed]
    if max_steps is not None and len(returned) >= max_steps:
        return f"stopped after max_steps={max_steps} node(s) returned to float"
    if not remaining and passed:
        return (
            f"every other ranked node would pass the latency cap in float ({len(passed)} "
            "passed over); loosen max_latency or the budget"
        )
    if not remaining:
        return f"every ranked node ({len(order)}) is already float"
    if set(quantized) <= {*returned, remaining[0]}:
        return (
            f"returning one more node would leave the whole model in float "
            f"({len(returned)} node(s) already returned); loosen the budget"
        )
    return None


def _folded(plan: QuantPlan) -> dict[str, str]:
    """Node -> the Relu/Clip folded into it."""
    return {d.name: d.fused_activation for d in plan.nodes if d.fused_activation is not None}


def _returnable(plan: QuantPlan) -> list[str]:
    """Quantized nodes a fallback can return.

    A folded Relu/Clip goes with its producer; a value-preserving op (Flatten, MaxPool, a
    Relu of its own) only rounds nothing and stays quantized just while a neighbour is
    (§Q6), so returning it buys nothing.
    """
    returnable = []
    for decision in plan.quantized_nodes():
        spec = lookup(decision.op_type)
        if decision.fused_into is None and not (spec is not None and spec.same_as_input):
            returnable.append(decision.name)
    return returnable


def _score_value(value: object) -> float:
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"the budget metric must return one number (got {value!r})") from None
    if math.isnan(score):
        raise ConfigError("the budget metric returned NaN")
    return score


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_options(
    ranking: str, rank_samples: int, max_steps: int | None, latency_runs: int
) -> None:
    if ranking not in RANKINGS:
        raise ConfigError(f"'ranking' must be one of {list(RANKINGS)} (got {ranking!r})")
    for name, value, least in (
        ("rank_samples", rank_samples, 1),
        ("latency_runs", latency_runs, 0),
        ("max_steps", 0 if max_steps is None else max_steps, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name!r} must be an integer >= {least} (got {value!r})")
