"""Accuracy-aware fallback (docs/numerics.md §R.7-§R.10) on a small classifier: the
search stops at the shortest prefix of the ranking that holds, never builds when the budget
holds already, and stops with a clear message when only the float model is left."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from eightbit.analysis.metrics import sqnr_db, topk_agreement
from eightbit.calibrate import CalibrationConfig, Ranges, calibrate
from eightbit.errors import ConfigError
from eightbit.export import to_qdq
from eightbit.graph import Graph, make_session, normalize
from eightbit.improve.fallback.driver import Budget, Measured, fallback, rank_nodes
from eightbit.improve.fallback.search import rebuild_bound
from eightbit.plan import QuantPlan, activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig
from tests.analysis.helpers import classifier, images


@dataclass(frozen=True)
class Built:
    model: onnx.ModelProto
    plan: QuantPlan


class Builder:
    """``build(excluded)`` as the pipeline gives it, counting its calls."""

    def __init__(self, ranges: Ranges | dict[str, tuple[float, float]]) -> None:
        self.model = normalize(classifier(seed=3))
        self.graph = Graph(self.model)
        self.ranges = ranges
        self.calls: list[frozenset[str]] = []

    def __call__(self, excluded: frozenset[str]) -> Built:
        self.calls.append(excluded)
        plan = make_plan(self.graph, self.ranges, QuantConfig(exclude=tuple(sorted(excluded))))
        return Built(to_qdq(self.model, plan), plan)


@pytest.fixture(scope="module")
def ranges() -> Ranges:
    # Only what the plan with nothing excluded needs, as the pipeline calibrates: a node
    # returns to float with its folded Relu, so no other tensor needs a range.
    model = normalize(classifier(seed=3))
    return calibrate(
        model,
        {"input": images(64, seed=4)},
        CalibrationConfig(method="minmax"),
        tensors=activation_tensors_to_calibrate(Graph(model), QuantConfig()),
        normalized=True,
    )


DATA = {"input": images(40, seed=9)}


def measured_by_oracle(builder: Builder, model: onnx.ModelProto) -> tuple[float, float]:
    feeds = DATA
    reference = make_session(builder.model).run(["logits"], feeds)[0]
    output = make_session(model).run(["logits"], feeds)[0]
    return sqnr_db(reference, output), topk_agreement(reference, output)


def test_a_budget_already_met_changes_nothing(ranges: Ranges) -> None:
    builder = Builder(ranges)
    base = builder(frozenset())
    builder.calls.clear()
    result = fallback(builder.model, builder, DATA, Budget(min_sqnr=0.0), base=base)
    assert builder.calls == []
    assert result.met and result.returned == result.excluded == ()
    assert result.quantized is base
    # The report says how many samples judged the budget, and how loose an agreement on
    # that many is: sqrt(max(a (1 - a), 1/n) / n).
    agreement = result.measured.agreement
    assert agreement is not None
    error = np.sqrt(max(agreement * (1 - agreement), 1 / 40) / 40)
    assert (
        f"measured on 40 samples (standard error of the agreement: {error:.3f})"
        in (result.report.notes[1])
    )
    assert result.report.layers == () and result.ranking == ()
    assert result.cost.parameter_bytes_after == result.cost.parameter_bytes_before
    # Without a base the loop builds it, once, with nothing excluded.
    again = fallback(builder.model, builder, DATA, Budget(max_drop=1.0), latency_runs=0)
    assert builder.calls == [frozenset()] and again.excluded == ()


def test_an_impossible_budget_stops_before_all_float(ranges: Ranges) -> None:
    builder = Builder(ranges)
    result = fallback(
        builder.model, builder, DATA, Budget(min_sqnr=500.0), ranking="own", latency_runs=0
    )
    assert not result.met
    assert "leave the whole model in float" in result.message
    assert result.message in result.report.notes[0]
    named = f"returned to float ({len(result.returned)}): {', '.join(result.returned)}"
    assert named in result.report.notes
    base = builder(frozenset())
    returnable = {"conv1", "conv2", "add", "pool", "fc"}  # not Flatten: it only moves values
    # The base, then the gallop along the ranking (§R.10): 1 node, 3, then all but the last.
    assert set(result.ranking) == returnable
    expected = [with_folded(base.plan, result.ranking[:k]) for k in (0, 1, 3, 4)]
    assert builder.calls[:-1] == expected
    assert set(result.excluded) == expected[-1]
    assert result.returned == result.ranking[:4]
    assert result.rebuilds == 4 and "rebuilds: 4 (bound " in result.report.notes[4]


@pytest.mark.parametrize("ranking", ["build", "what_if"])
def test_stops_at_the_shortest_prefix_that_holds(ranges: Ranges, ranking: str) -> None:
    builder = Builder(ranges)
    base = builder(frozenset())
    order = rank_nodes(builder.model, base, DATA, ranking, build=builder)  # type: ignore[arg-type]
    returnable = ["conv1", "conv2", "add", "pool", "fc"]
    longest = len(order) - (1 if set(order) == set(returnable) else 0)  # eq. R.12
    sqnrs = [
        measured_by_oracle(builder, builder(with_folded(base.plan, order[:j])).model)[0]
        for j in range(longest + 1)
    ]
    # The first k whose prefixes, from k on, all beat every shorter one: a budget between.
    k = next(k for k in range(1, longest + 1) if min(sqnrs[k:]) > max(sqnrs[:k]))
    budget = Budget(min_sqnr=(min(sqnrs[k:]) + max(sqnrs[:k])) / 2)
    builder.calls.clear()
    result = fallback(
        builder.model, builder, DATA, budget, base=base, ranking=ranking, latency_runs=2,
        prune_steps=0,
    )  # type: ignore[arg-type]  # fmt: skip
    assert result.met
    assert result.ranking == order and result.returned == order[:k]
    ranked = 0
    if ranking == "build":  # one build per candidate, with it alone in float, to rank them
        ranked = len(returnable)
        assert builder.calls[:ranked] == [with_folded(base.plan, (n,)) for n in returnable]
    prefixes = [with_folded(base.plan, order[:j]) for j in range(1, longest + 1)]
    searched = builder.calls[ranked:]
    assert all(call in prefixes for call in searched)
    assert searched[-1] == with_folded(base.plan, order[:k]) or k < longest
    assert len(searched) <= rebuild_bound(longest, 0, 0)  # 2 ceil(log2(K + 1)) - 1
    assert result.rebuilds == len(builder.calls)
    sqnr, agreement = measured_by_oracle(builder, result.model)
    assert result.measured.sqnr_db == pytest.approx(sqnr)
    assert result.measured.agreement == pytest.approx(agreement)
    # What it cost: the returned nodes' parameters in float, and timed latencies.
    cost = result.cost
    float_params = _float_parameter_bytes(builder.model, result.returned)
    assert cost.returned_float_bytes == float_params
    assert cost.parameter_bytes_after > cost.parameter_bytes_before
    assert cost.int8_ms_before and cost.int8_ms_after and cost.float_ms
    assert result.report.name == "fallback" and len(result.report.layers) == k
    assert result.report.layers[-1].after_db == pytest.approx(sqnr)


def test_the_planted_worst_layer_ranks_first(ranges: Ranges) -> None:
    # conv2's output range cut to a tenth: it saturates, and nothing else is as harmful.
    planted = {name: (ranges[name].min, ranges[name].max) for name in ranges}
    planted["r2"] = (0.0, planted["r2"][1] / 10)
    builder = Builder(planted)
    base = builder(frozenset())
    for ranking in ("added", "what_if", "own"):
        order = rank_nodes(builder.model, base, DATA, ranking, build=builder)  # type: ignore[arg-type]
        assert order[0] == "conv2", ranking
        assert set(order) <= {"conv1", "conv2", "add", "pool", "fc"}
    # r2 stays rounded (and cut) while its reader, add, is int8: ``added`` ranks the reader
    # next (§R.8), and the search returns the two. Rebuilding one node at a time (``build``)
    # finds no single node that helps.
    assert rank_nodes(builder.model, base, DATA, "added")[:2] == ("conv2", "add")
    result = fallback(builder.model, builder, DATA, Budget(min_sqnr=25.0), base=base,
                      ranking="added", latency_runs=0)  # fmt: skip
    assert result.met and result.returned == ("conv2", "add")


def test_a_user_metric_budget(ranges: Ranges) -> None:
    builder = Builder(ranges)

    def closeness(reference: np.ndarray, quantized: np.ndarray) -> float:
        return -float(np.max(np.abs(reference - quantized)))

    base = builder(frozenset())
    result = fallback(
        builder.model, builder, DATA, Budget(max_drop=1e9, metric=closeness), base=base
    )
    assert result.met and result.excluded == ()
    reference = make_session(builder.model).run(["logits"], DATA)[0]
    output = make_session(base.model).run(["logits"], DATA)[0]
    assert result.measured.metric_drop == pytest.approx(-closeness(reference, output))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs 'max_drop' or 'min_sqnr'"),
        ({"max_drop": 2.0}, "fraction"),
        ({"max_drop": -0.1}, "max_drop"),
        ({"min_sqnr": math.inf}, "min_sqnr"),
        ({"min_sqnr": 20.0, "metric": abs}, "needs 'max_drop'"),
    ],
)
def test_budgets_are_checked(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Budget(**kwargs)  # type: ignore[arg-type]


def test_agreement_budget_arithmetic() -> None:
    budget = Budget(max_drop=0.05)
    assert Measured(20.0, 380 / 400).meets(budget)  # 1 - 0.05 in decimal, exactly
    assert not Measured(20.0, 379 / 400).meets(budget)
    assert not Measured(20.0, 0.99).meets(Budget(max_drop=0.05, min_sqnr=25.0))
    with pytest.raises(ConfigError, match="classification output"):
        Measured(20.0, None).meets(budget)


def with_folded(plan: QuantPlan, nodes: tuple[str, ...]) -> frozenset[str]:
    """``nodes`` and the Relu/Clip folded into each: what a fallback keeps in float."""
    folded = {d.name: d.fused_activation for d in plan.nodes if d.fused_activation}
    return frozenset(nodes) | {folded[n] for n in nodes if n in folded}


def _float_parameter_bytes(model: onnx.ModelProto, nodes: tuple[str, ...]) -> int:
    graph = Graph(model)
    total = 0
    for node in graph.nodes:
        if node.name in nodes:
            total += sum(
                4 * graph.initializers[name].size
                for name in node.inputs
                if name in graph.initializers
            )
    return total


def test_the_report_names_the_first_returned_nodes_and_counts_the_rest() -> None:
    from eightbit.improve.fallback.driver import _returned_note

    assert _returned_note(()) == "returned to float: none"
    names = [f"n{i}" for i in range(10)]
    note = _returned_note(names)
    assert note.startswith("returned to float (10): n0, n1, n2, n3, n4, n5, n6, n7 and 2 more")
    assert "n8" not in note


class Slow:
    """A fake latency ratio: 0.5, plus 0.3 when ``slow`` is float, plus 0.01 per other
    float node, read from the last model the builder made (the one being timed)."""

    def __init__(self, builder: Builder, slow: str, base: float = 0.5) -> None:
        self.builder, self.slow, self.base = builder, slow, base
        self.timed: list[float] = []

    def __call__(self, model: onnx.ModelProto) -> float:
        excluded = self.builder.calls[-1] if self.builder.calls else frozenset()
        ratio = self.base + 0.01 * len(excluded) + (0.3 if self.slow in excluded else 0.0)
        self.timed.append(ratio)
        return ratio


def test_a_latency_cap_passes_over_nodes_too_slow_in_float(ranges: Ranges) -> None:
    builder = Builder(ranges)
    base = builder(frozenset())
    order = rank_nodes(builder.model, base, DATA, "own")
    slow = Slow(builder, slow=order[0])
    budget = Budget(min_sqnr=500.0, max_latency=0.6)
    result = fallback(
        builder.model, builder, DATA, budget, base=base, ranking="own", latency=slow,
        latency_runs=0,
    )  # fmt: skip
    # The most harmful node would make the model 0.8x float: it stays int8, the others go.
    assert result.passed_over == (order[0],)
    assert (
        order[0] not in result.returned and result.returned == order[1 : 1 + len(result.returned)]
    )
    assert result.returned
    assert result.latency_ratio is not None and result.latency_ratio <= 0.6
    assert not result.met  # 500 dB: no int8 model
    assert "1 node(s) passed over as too slow in float" in result.report.notes[-1]
    assert "int8 latency <= 0.6x float" in result.report.notes[0]


def test_a_model_already_slower_than_the_cap_returns_nothing(ranges: Ranges) -> None:
    builder = Builder(ranges)
    base = builder(frozenset())
    budget = Budget(min_sqnr=500.0, max_latency=0.4)
    result = fallback(
        builder.model, builder, DATA, budget, base=base, latency=Slow(builder, "none"),
        latency_runs=0,
    )  # fmt: skip
    assert result.returned == () and not result.met
    assert "already runs at 0.500x the float latency" in result.message
    assert len(builder.calls) == 1  # the base only: nothing was tried


def test_the_latency_cap_is_checked() -> None:
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ConfigError, match="'max_latency' must be a ratio > 0"):
            Budget(min_sqnr=20.0, max_latency=bad)
