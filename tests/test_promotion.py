"""Mixed precision to a budget: tensors promoted to int16 (docs/numerics.md §R.11).

On a classifier whose 8-bit grid collapses one tensor, ``--target mcu --min-sqnr`` meets
the budget by promoting that tensor, with every node integer; the candidates are ordered by
gain per cost as documented; the rebuilds stay within the bound (R.17). mcu models are
checked with ONNX Runtime and ``onnx.reference`` only (the engine has no s16 kernels yet).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx.reference import ReferenceEvaluator

import eightbit
import eightbit.rebuild.net
from eightbit.calibrate import Ranges, TensorRange
from eightbit.cli import main
from eightbit.graph import Graph, make_session
from eightbit.improve.budget import Budget
from eightbit.improve.fallback.search import rebuild_bound
from eightbit.improve.presets import PRESETS, preset
from eightbit.improve.promote import gain_order
from eightbit.improve.promote_cost import (
    S16_BIAS_EXTRA_BYTES,
    S16_CYCLE_FACTOR,
    PromotionCost,
    TensorFacts,
    promotion_costs,
)
from eightbit.improve.promote_plan import at_int16_opset, promotion_candidates
from eightbit.improve.promote_plan import extremes_for as _extremes_for
from eightbit.pipeline import quantize
from eightbit.quant import QuantConfig
from eightbit.rebuild import Prepared, run_promotion
from eightbit.report import build_report
from eightbit.safety_net import LatencyCap
from tests.fixtures.joins import inputs, large_small_concat
from tests.fixtures.promote import (
    WIDE_OFFSET,
    collapsing_net,
    collapsing_samples,
    residual_chain,
)

JOIN_DATA = inputs()


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return collapsing_samples()


@pytest.fixture(scope="module")
def promoted(samples):
    improve = preset("fast", min_sqnr=25.0)
    return quantize(
        collapsing_net(), {"x": samples}, QuantConfig.for_target("mcu"), improve=improve
    )


def test_8_bit_collapses_the_wide_tensor(samples):
    result = quantize(
        collapsing_net(), {"x": samples}, QuantConfig.for_target("mcu"), improve="fast"
    )
    assert result.check is not None and result.check.outputs[0].sqnr_db < 10.0


def test_mcu_meets_the_budget_by_promotion_with_every_node_integer(promoted):
    assert promoted.plan.config.int16 == ("wide",)
    assert promoted.plan.fallbacks() == ()
    assert promoted.check is not None and promoted.check.outputs[0].sqnr_db >= 25.0
    step = next(s for s in promoted.plan.steps if s.name == "int16_promotion")
    assert any(note.startswith("promoted to int16: wide: +") for note in step.notes)
    assert any("mcu footprint" in note for note in step.notes)
    int16 = [
        i.name for i in promoted.model.graph.initializer if i.data_type == onnx.TensorProto.INT16
    ]
    assert int16, "an int16 zero point in the QDQ model"


def test_a_budget_without_float_kernels_also_reconstructs_the_weights(promoted, samples):
    # Promotion cannot reduce the int8 weights' own error (§R.11): on mcu the weights are
    # reconstructed too; where float kernels exist, the preset decides.
    assert "reconstruct" in [step.name for step in promoted.plan.steps]
    on_ort = quantize(collapsing_net(), {"x": samples}, improve=preset("fast", min_sqnr=25.0))
    assert "reconstruct" not in [step.name for step in on_ort.plan.steps]


def test_onnx_reference_and_onnx_runtime_agree_on_the_promoted_model(promoted, samples):
    feed = {"x": samples[:8]}
    ours = make_session(promoted.model).run(None, feed)[0]
    reference = ReferenceEvaluator(promoted.model).run(None, feed)[0]
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-3)


def test_a_promoted_tensor_takes_its_observed_extremes(promoted):
    params = promoted.plan.tensors["wide"]
    assert params.dtype == "int16" and int(params.zero_point) == 0
    observed = promoted.ranges["wide"]
    assert observed.min == observed.observed_min and observed.max == observed.observed_max
    assert float(params.scale) == pytest.approx(observed.observed_max / 32767, rel=1e-6)
    assert observed.observed_max == pytest.approx(WIDE_OFFSET, rel=1e-3)


def test_extremes_for_changes_only_the_promoted_tensors():
    ranges = Ranges(
        "percentile",
        {"a": TensorRange(0.0, 1.0, -2.0, 9.0), "b": TensorRange(0.0, 1.0, -3.0, 4.0)},
        10,
    )
    widened = _extremes_for(ranges, frozenset({"a"}))
    assert (widened["a"].min, widened["a"].max) == (-2.0, 9.0)
    assert widened["b"] == ranges["b"]


def test_gain_order_is_gain_per_cost_and_no_gain_goes_last():
    def cost(name: str, relative: float) -> PromotionCost:
        return PromotionCost(name, 0, 0, 0, 0, relative)

    gains = {"a": 1.0, "b": 1.0, "c": 2.0, "d": 0.0, "e": -1.0, "f": 3.0}
    costs = {
        "a": cost("a", 0.5), "b": cost("b", 0.1), "c": cost("c", 1.0),
        "d": cost("d", 0.01), "e": cost("e", 0.01), "f": cost("f", 100.0),
    }  # fmt: skip
    # b: 10 per unit, a and c: 2 (candidate order breaks the tie), f: 0.03; then d, e.
    assert gain_order(gains, costs) == ("b", "a", "c", "f", "d", "e")


def test_mcu_and_ort_costs_follow_the_documented_model():
    facts = {
        "t": TensorFacts(elements=100, reader_macs=1000, writer_macs=50, reader_channels=8),
        "u": TensorFacts(elements=10, reader_macs=3000, writer_macs=1000, reader_channels=2),
    }
    mcu = promotion_costs(facts, "mcu", flash=1000, arena=400)
    cycles = int((S16_CYCLE_FACTOR - 1) * 1000) + 100
    assert mcu["t"] == PromotionCost(
        "t", S16_BIAS_EXTRA_BYTES * 8, 100, cycles, 1050,
        S16_BIAS_EXTRA_BYTES * 8 / 1000 + 100 / 400 + cycles / 4000,
    )  # fmt: skip
    ort = promotion_costs(facts, "ort", flash=1000, arena=400)
    assert ort["u"].relative == pytest.approx((3000 + 1000 + 10) / 4000)
    assert ort["t"].relative < ort["u"].relative  # fewer MACs leave the int8 kernels


def test_the_rebuilds_stay_within_the_bound(samples):
    """One pass ranks the candidates (``own``), then the search: logarithmic in them."""
    model = residual_chain(40)
    data = np.random.default_rng(0).standard_normal((32, 4, 4, 4)).astype(np.float32)
    result = quantize(model, {"input": data}, QuantConfig.for_target("mcu"), improve="fast")
    net = Prepared(result.float_model, result.prepared_model, result.prepared_model,
                   result.ranges, result.plan.config)  # fmt: skip
    budget = Budget(min_sqnr=200.0)  # out of reach: the search runs to its end
    found = run_promotion(net, result.plan, result.model, {"input": data}, budget, None, False,
                          ranking="own")  # fmt: skip
    candidates = len(promotion_candidates(result.plan, result.ranges, Graph(net.planned)))
    assert candidates >= 40  # the input, each block's Relu-folded Conv or its Add, the head
    assert not found.met
    assert found.rebuild_bound == rebuild_bound(candidates, 0, 4)
    assert 0 < found.rebuilds <= found.rebuild_bound <= 3 * math.ceil(math.log2(candidates + 1)) + 3
    note = next(n for n in found.report.notes if n.startswith("ranking"))
    assert re.search(rf"rebuilds: {found.rebuilds} \(bound {found.rebuild_bound}\)", note)


def test_cli_mcu_min_sqnr_promotes(tmp_path, samples):
    model = tmp_path / "m.onnx"
    onnx.save(collapsing_net(), model)
    np.save(tmp_path / "x.npy", samples)
    args = ["quantize", str(model), "-d", str(tmp_path / "x.npy"), "-o", str(tmp_path / "q.onnx")]
    flags = ["--target", "mcu", "--min-sqnr", "25", "--preset", "fast", "--json"]
    result = CliRunner().invoke(main, [*args, *flags])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["int16"] == ["wide"]


def test_the_report_lists_each_promoted_tensor_and_its_cost(promoted, samples):
    data = build_report(
        collapsing_net(), promoted.model, {"x": samples[:16]}, plan=promoted.plan, latency_runs=0
    )
    line = "int16_promotion: promoted to int16: wide: +"
    assert any(note.startswith(line) for note in data.notes)
    assert any("mcu footprint" in note for note in data.notes)


# -- the default preset's safety net (§I.9, rung 3) -----------------------------------------


def _no_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        eightbit.rebuild.net, "latency_cap", lambda *args: LatencyCap(100.0, "100x (test)")
    )


def test_the_net_promotes_where_float_cannot_reach_the_floor(samples, monkeypatch):
    _no_cap(monkeypatch)
    result = quantize(collapsing_net(), {"x": samples}, QuantConfig())
    (net,) = [step for step in result.plan.steps if step.name == "safety_net"]
    assert any(n.startswith("rung 3, int16 promotion instead of float (kept)") for n in net.notes)
    assert result.plan.config.int16 == ("wide",) and result.plan.fallbacks() == ()
    assert result.check is not None and result.check.outputs[0].worst_slice_sqnr_db >= 10.0


def test_the_net_does_not_promote_where_float_reaches_the_floor(monkeypatch):
    _no_cap(monkeypatch)
    improve = replace(PRESETS["default"], separate_joins=False)
    result = eightbit.quantize(large_small_concat(flatten=True), JOIN_DATA, improve=improve)
    (net,) = [step for step in result.plan.steps if step.name == "safety_net"]
    assert not any(note.startswith("rung 3") for note in net.notes)
    assert result.plan.config.int16 == ()


def test_the_mcu_net_promotes_with_every_node_integer(samples):
    result = quantize(collapsing_net(), {"x": samples}, QuantConfig.for_target("mcu"))
    assert result.plan.config.int16 == ("wide",) and result.plan.fallbacks() == ()
    assert result.check is not None and result.check.outputs[0].worst_slice_sqnr_db >= 10.0


def test_the_opset_upgrade_leaves_no_unnamed_or_constant_node():
    """An opset-12 Unsqueeze takes ``axes`` as an attribute; at opset 21 as an input, which
    the converter feeds from an unnamed Constant node (the plan needs a name per node)."""
    node = onnx.helper.make_node("Unsqueeze", ["x"], ["y"], "unsqueeze", axes=[0])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 12)])
    upgraded = at_int16_opset(model)
    assert upgraded.opset_import[0].version == 21
    assert [(n.name, n.op_type) for n in upgraded.graph.node] == [("unsqueeze", "Unsqueeze")]
    assert len(upgraded.graph.initializer) == 1  # the axes
    x = np.arange(3, dtype=np.float32)
    assert make_session(upgraded).run(None, {"x": x})[0].shape == (1, 3)


def test_the_net_promotes_nothing_when_the_8_bit_model_is_already_over_the_cap(
    samples, monkeypatch
):
    monkeypatch.setattr(
        eightbit.rebuild.net, "latency_cap", lambda *args: LatencyCap(1e-6, "1e-06x (test)")
    )
    result = quantize(collapsing_net(), {"x": samples}, QuantConfig())
    (net,) = [step for step in result.plan.steps if step.name == "safety_net"]
    assert any("promoting tensors would only slow it" in note for note in net.notes)
    assert result.plan.config.int16 == ()


def test_an_ort_budget_float_cannot_meet_is_met_by_promotion(samples):
    improve = preset("fast", min_sqnr=30.0)
    result = quantize(collapsing_net(), {"x": samples}, QuantConfig(), improve=improve)
    (step,) = [s for s in result.plan.steps if s.name == "fallback"]
    assert any(n.startswith("budget missed with float nodes: int16 promotion instead (kept)")
               for n in step.notes)  # fmt: skip
    assert result.plan.config.int16 == ("wide",) and result.plan.fallbacks() == ()


def test_an_ort_budget_float_meets_tries_no_promotion(monkeypatch):
    from eightbit.pipeline import stages
    from tests.fixtures import models

    def tried(*args: object) -> None:
        raise AssertionError("promotion tried although the fallback held the budget")

    monkeypatch.setattr(stages, "promote_after_fallback", tried)
    model = models.conv_bn_relu()
    data = models.random_inputs(model, n=64, seed=3)
    result = quantize(model, data, QuantConfig(), improve=preset("fast", min_sqnr=50.0))
    assert result.plan.fallbacks() and result.plan.config.int16 == ()
