"""What a promotion costs on mcu and what it settles on (docs/numerics.md §R.11, §E.14):
a clamp the engine folds is one int16 tensor in the footprint, a tensor off the arena's
peak costs no arena, and a search that misses keeps the best model it measured."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from eightbit.graph import Graph
from eightbit.improve import promote as promote_module
from eightbit.improve.budget import Budget, Measured
from eightbit.improve.fallback.search import Probe, Searched
from eightbit.improve.measure import OutputReference
from eightbit.improve.promote import best_probe, promote
from eightbit.improve.promote_cost import (
    PromotionCost,
    TensorFacts,
    arena_bytes,
    arena_increases,
    folded_clamps,
    footprint,
    tensor_facts,
)
from eightbit.improve.promote_plan import at_int16_opset, promotion_candidates
from eightbit.pipeline import quantize as pipeline_quantize
from eightbit.plan import QuantPlan
from eightbit.quant import QuantConfig
from eightbit.rebuild import Prepared
from eightbit.rebuild.promotion import _candidate_source
from tests.export.helpers import make_model, quantize
from tests.fixtures.clamp16 import conv_clip


def test_a_folded_clamp_is_one_int16_tensor_in_the_footprint() -> None:
    model, feeds = conv_clip(tail=True)
    quantized = quantize(model, feeds, QuantConfig(int16=("r",)))
    graph, plan = Graph(quantized.float_model), quantized.plan
    assert plan.tensors["c"] == plan.tensors["r"] and plan.tensors["r"].dtype == "int16"
    assert folded_clamps(graph, plan) == {"c": "r"}
    facts = tensor_facts(quantized.float_model, ["c", "r"], {"x": feeds["x"][:1]})
    _, arena = footprint(graph, plan, facts, parameters=0)
    assert arena == 2 * facts["r"].elements  # r alone, two bytes an element; c not stored
    assert arena_bytes(graph, facts, {"c", "r"}) == 2 * arena  # unfolded: both alive


def test_an_eight_bit_clamp_is_not_folded() -> None:
    model, feeds = conv_clip(tail=True)
    quantized = quantize(model, feeds, QuantConfig(scheme="pow2"))
    assert folded_clamps(Graph(quantized.float_model), quantized.plan) == {}


def _relu_chain(sizes: dict[str, int]) -> tuple[Graph, dict[str, TensorFacts]]:
    names = ["x", *sizes, "y"]
    nodes = [
        helper.make_node("Relu", [a], [b], name=f"relu_{b}") for a, b in itertools.pairwise(names)
    ]
    graph = Graph(make_model(nodes, [("x", (1, 4))], [("y", (1, 4))]))
    facts = {name: TensorFacts(size, 0, 0, 0) for name, size in sizes.items()}
    return graph, facts


def test_a_tensor_off_the_arena_peak_costs_no_arena() -> None:
    # a and e make the peak (a + b, d + e); c lives beside two small tensors only.
    graph, facts = _relu_chain({"a": 100, "b": 8, "c": 8, "d": 8, "e": 100})
    grown = arena_increases(graph, facts)
    assert grown["c"] == 0
    assert grown["a"] == 100 and grown["b"] == 8  # on the peak: its elements again


@dataclass(frozen=True)
class _Built:
    model: onnx.ModelProto
    plan: QuantPlan | None
    measured: Measured | None = None


def _probe(returned: tuple[str, ...], sqnr: float) -> Probe:
    measured = Measured(sqnr, None)
    built = promote_module._Model(_Built(onnx.ModelProto(), None), measured, None)
    return Probe(returned, built, slow=False, meets=sqnr >= 25.0, sqnr_db=sqnr)


def test_best_probe_prefers_the_budget_then_the_sqnr_then_fewer_tensors() -> None:
    budget = Budget(min_sqnr=25.0)
    probes = [_probe((), 20.0), _probe(("a",), 24.0), _probe(("a", "b"), 23.0)]
    assert best_probe(probes, budget).returned == ("a",)
    probes += [_probe(("a", "b", "c"), 26.0), _probe(("a", "c"), 26.0)]
    assert best_probe(probes, budget).returned == ("a", "c")


def test_a_missed_budget_keeps_the_best_measured_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search ends on its longest failing prefix (23 dB); the 24 dB one is kept."""
    model, feeds = conv_clip(tail=False)
    probes = (_probe(("a",), 24.0), _probe(("a", "b"), 23.0))

    def searched(order, start, trial, **options):  # type: ignore[no-untyped-def]
        return Searched(probes[-1], (), probes, "budget not met with 2 node(s) in float")

    monkeypatch.setattr(promote_module, "search_prefix", searched)
    monkeypatch.setattr(promote_module, "_gains", lambda *a: {"a": 1.0, "b": 0.5})
    costs = {name: PromotionCost(name, 0, 0, 0, 0, 1.0) for name in ("a", "b")}
    result = promote(
        model, lambda tensors: _Built(model, None), {"x": feeds["x"]}, Budget(min_sqnr=25.0),
        costs, base=_Built(model, None), target="mcu", score=lambda m: Measured(20.0, None),
    )  # fmt: skip
    assert result.promoted == ("a",) and result.measured.sqnr_db == 24.0 and not result.met
    assert "best model measured" in result.message
    assert np.isfinite(result.measured.sqnr_db)


@pytest.mark.parametrize("broken", ["prepared", "planned"])
def test_the_candidates_come_from_the_model_that_measures_better(broken: str) -> None:
    """The prepared model (the plan's weight-side steps) when it scores better with every
    candidate int16, else the planned one: here one of the two has a wrong bias."""
    model, feeds = conv_clip(tail=True)
    result = pipeline_quantize(model, feeds, QuantConfig.for_target("mcu"), improve="fast")
    good = at_int16_opset(result.prepared_model)
    bad = onnx.ModelProto()
    bad.CopyFrom(good)
    bias = next(t for t in bad.graph.initializer if t.name == "b")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 3.0, "b"))
    prepared, planned = (bad, good) if broken == "prepared" else (good, bad)
    net = Prepared(result.float_model, prepared, planned, result.ranges, result.plan.config)
    candidates = frozenset(promotion_candidates(result.plan, result.ranges, Graph(planned)))
    score = OutputReference(result.float_model, [feeds], None)
    chosen, note = _candidate_source(net, candidates, True, score)
    assert chosen.prepared is good
    source = "planned" if broken == "prepared" else "prepared"
    assert note.startswith(f"candidates built from the {source} model")
