"""Issue 13: no collapse by construction (§Q13), the safety net (§I.9), honest verdicts.

The planted model joins a [0, ~260] branch and a [0, 1] branch (mostly under 0.1) in one
Concat output, as a detector's head does: on one int8 grid every class score rounds to 0.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import eightbit
import eightbit.pipeline
import eightbit.pipeline.judging
import eightbit.rebuild.net
from eightbit.analysis.slices import slice_verdict
from eightbit.cli import main
from eightbit.graph import Graph, normalize, save_model
from eightbit.improve.presets import PRESETS, preset
from eightbit.ops.joins import JOIN_RATIO
from eightbit.plan import activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig
from eightbit.safety_net import SAFETY_FLOOR_DB, LatencyCap
from tests.fixtures import models
from tests.fixtures.joins import BOXES, inputs, large_small_concat, sigmoid_head
from tests.fixtures.models import run_onnxruntime

DATA = inputs()


@pytest.fixture(scope="module")
def default_result() -> eightbit.QuantizedModel:
    return eightbit.quantize(large_small_concat(), DATA)


@pytest.fixture(scope="module")
def fast_result() -> eightbit.QuantizedModel:
    return eightbit.quantize(large_small_concat(), DATA, improve="fast")


def _scores_sqnr(result: eightbit.QuantizedModel) -> float:
    """SQNR of the class-score part on every sample, computed here from the two outputs."""
    (reference,) = run_onnxruntime(result.float_model, DATA)
    (int8,) = run_onnxruntime(result.model, DATA)
    ref, out = reference[:, BOXES:].astype(np.float64), int8[:, BOXES:].astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2)))


def test_default_keeps_the_small_branch(default_result: eightbit.QuantizedModel) -> None:
    decision = default_result.plan.decision("head_concat")
    assert not decision.quantized
    assert decision.reason is not None and "§Q13" in decision.reason
    check = default_result.check
    assert check is not None and not check.findings()
    (output,) = check.outputs
    assert output.slices is not None and not output.collapsed
    assert output.worst_slice_sqnr_db >= SAFETY_FLOOR_DB
    assert [part.name for part in output.slices.parts] == ["boxes", "scores"]
    assert _scores_sqnr(default_result) > 20
    # Nothing missed the floor, so the safety net did not run.
    assert "safety_net" not in [step.name for step in default_result.plan.steps]


def test_fast_reports_the_collapse_as_an_error(fast_result: eightbit.QuantizedModel) -> None:
    assert fast_result.plan.decision("head_concat").quantized
    check = fast_result.check
    assert check is not None
    (finding,) = check.findings()
    assert finding.level == "error" and finding.output == "out"
    (output,) = check.outputs
    assert output.collapsed and output.worst_slice_sqnr_db <= 0.0
    assert output.sqnr_db > 20  # the whole-tensor figure alone says all is well
    assert _scores_sqnr(fast_result) < 3  # most scores round to 0


def test_the_cli_prints_the_worst_slice_and_the_error(tmp_path: Path) -> None:
    model_path, data_path = tmp_path / "head.onnx", tmp_path / "data.npz"
    save_model(large_small_concat(), model_path)
    np.savez(data_path, **DATA)
    for preset_name, collapsed in (("fast", True), ("default", False)):
        out = tmp_path / f"{preset_name}.onnx"
        args = ["quantize", str(model_path), "-d", str(data_path), "-o", str(out)]
        result = CliRunner().invoke(main, [*args, "--preset", preset_name, "--json"])
        assert result.exit_code == 0, result.output
        check = json.loads(result.output)["check"]
        (output,) = check["outputs"]
        assert output["collapsed"] is collapsed
        assert [f["level"] for f in check["findings"]] == (["error"] if collapsed else [])
        assert json.loads(result.output)["findings"] == check["findings"]
        text = CliRunner().invoke(main, [*args, "--preset", preset_name, "-o", str(out) + "2"])
        assert "worst slice" in text.output
        assert ("ERROR" in text.output) is collapsed


def test_a_wide_join_before_a_heavy_op_stays_int8() -> None:
    # The same head, but a Conv reads the Concat: the Conv needs one grid anyway.
    model = large_small_concat()
    graph = model.graph
    graph.output[0].name = "out_conv"
    graph.initializer.append(numpy_helper.from_array(np.ones((2, 10, 1, 1), np.float32), "w_tail"))
    graph.node.append(helper.make_node("Conv", ["out", "w_tail"], ["out_conv"], name="tail"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("out_conv", TensorProto.FLOAT, None))
    plan = _plan(model)
    assert plan.decision("head_concat").quantized and plan.decision("tail").quantized
    assert plan.decision("cls_sigmoid").quantized  # probabilities a Conv reads (§Q13.1)
    # Nor does the safety net's first rung count it as the cheap tail: a heavy op follows.
    assert eightbit.rebuild.cheap_tail(plan, Graph(normalize(model))) == []
    # Without the Conv, the nodes that only feed the float join are float already (§Q14:
    # their int8 output would only round), so the first rung has nothing left to return.
    float_plan = _plan(large_small_concat())
    assert not float_plan.decision("box_scale").quantized
    assert not float_plan.decision("cls_sigmoid").quantized
    assert eightbit.rebuild.cheap_tail(float_plan, _graph()) == []


def test_probabilities_in_the_tail_stay_float() -> None:
    # Probabilities near sigmoid(-6) hold a step or two of the [0, 1] int8 grid; computed in
    # float from the int8 logits they keep the logits' relative precision (§Q13.1).
    model = sigmoid_head()
    default = eightbit.quantize(model, DATA)
    fast = eightbit.quantize(model, DATA, improve="fast")
    decision = default.plan.decision("cls_sigmoid")
    assert not decision.quantized
    assert decision.reason is not None and "§Q13.1" in decision.reason
    assert default.plan.decision("cls_conv").quantized
    assert fast.plan.decision("cls_sigmoid").quantized

    def small_sqnr(result: eightbit.QuantizedModel) -> float:
        """SQNR of the probabilities under 4 steps of 1/255, which the int8 output rounds."""
        (reference,) = run_onnxruntime(result.float_model, DATA)
        (int8,) = run_onnxruntime(result.model, DATA)
        small = reference < 4 / 255
        ref, out = reference[small].astype(np.float64), int8[small].astype(np.float64)
        return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2)))

    assert small_sqnr(default) > small_sqnr(fast) + 3
    # On a target without float kernels the Sigmoid stays int8.
    mcu = eightbit.quantize(model, DATA, QuantConfig(target="mcu"), improve="default")
    assert mcu.plan.decision("cls_sigmoid").quantized


def test_the_join_rule_is_a_ratio_of_input_ranges() -> None:
    model = large_small_concat()
    # Scores that are not probabilities, so that only the join rule decides (§Q13.1 aside).
    (sigmoid,) = [node for node in model.graph.node if node.op_type == "Sigmoid"]
    sigmoid.op_type = "Tanh"
    model = normalize(model)
    graph = Graph(model)
    config = QuantConfig()
    names = activation_tensors_to_calibrate(graph, config)

    def planned(box_high: float) -> bool:
        ranges = {name: (0.0, 1.0) for name in names}
        ranges["boxes"] = (0.0, box_high)
        ranges["out"] = (0.0, box_high)
        plan = make_plan(graph, ranges, config, separate_joins=True)
        return plan.decision("head_concat").quantized

    assert planned(JOIN_RATIO * 0.99)  # 16 steps or more for the narrow input: int8
    assert not planned(JOIN_RATIO * 1.01)
    # Without separate_joins (the fast preset, make_plan's default) it always stays int8.
    ranges = {name: (0.0, 300.0) if name in ("boxes", "out") else (0.0, 1.0) for name in names}
    assert make_plan(graph, ranges, config).decision("head_concat").quantized


def _graph() -> Graph:
    return Graph(normalize(large_small_concat()))


def _plan(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    normalized = normalize(model)
    graph = Graph(normalized)
    config = QuantConfig()
    names = activation_tensors_to_calibrate(graph, config)
    feeds = inputs(16)
    from tests.export.helpers import min_max_ranges

    return make_plan(graph, min_max_ranges(normalized, names, feeds), config, separate_joins=True)


def test_the_safety_net_engages_when_the_floor_is_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Joins left int8: the head collapses, the default preset's safety net must repair it.
    improve = replace(PRESETS["default"], separate_joins=False)
    caps: list[float] = []
    real = eightbit.rebuild.net.latency_cap

    def generous(*args, **kwargs) -> LatencyCap:  # type: ignore[no-untyped-def]
        caps.append(real(*args, **kwargs).ratio)  # ONNX Runtime's own int8 runs and is timed
        return LatencyCap(100.0, "100x (test)")  # a tiny model's timings are noise: no cap

    monkeypatch.setattr(eightbit.rebuild.net, "latency_cap", generous)
    result = eightbit.quantize(large_small_concat(), DATA, improve=improve)
    assert len(caps) == 1 and caps[0] > 0
    (step,) = [s for s in result.plan.steps if s.name == "safety_net"]
    assert "engaged" in step.notes[0] and "collapsed" in step.notes[0]
    # The first rung, the cheap tail after the last heavy op in float, is enough here.
    assert step.notes[1].startswith("tail after the last heavy op returned to float first")
    for name in ("head_concat", "cls_sigmoid", "box_scale"):
        assert name in step.notes[1] and not result.plan.decision(name).quantized
    assert result.plan.decision("cls_conv").quantized
    assert any(note.startswith("worst output slice") for note in step.notes)
    assert result.check is not None and not result.check.findings()
    assert result.check.outputs[0].worst_slice_sqnr_db >= SAFETY_FLOOR_DB


class _TimedCap(LatencyCap):
    """A generous cap whose recheck reports ``factor`` without timing anything."""

    factor: float = 1.0

    def paired_ratio(self, model, feed):  # type: ignore[no-untyped-def]
        return self.factor


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_the_safety_nets_model_is_rechecked_beside_the_caps_reference(
    monkeypatch: pytest.MonkeyPatch, factor: float
) -> None:
    # The net repairs the collapse within a generous cap; timed beside the cap's reference,
    # a model 1.5x slower than it is not kept: the model before the net is the result.
    cap = _TimedCap(100.0, "100x (test)", reference=onnx.ModelProto())
    object.__setattr__(cap, "factor", factor)
    monkeypatch.setattr(eightbit.rebuild.net, "latency_cap", lambda *args: cap)
    improve = replace(PRESETS["default"], separate_joins=False)
    result = eightbit.quantize(large_small_concat(), DATA, improve=improve)
    (step,) = [s for s in result.plan.steps if s.name == "safety_net"]
    assert result.check is not None
    if factor == 1.0:
        assert not result.plan.decision("head_concat").quantized
        assert not result.check.findings()
        assert not any(note.startswith("reverted") for note in step.notes)
    else:
        assert result.plan.decision("head_concat").quantized and result.check.findings()
        assert step.notes[-1].startswith("reverted: timed beside the cap's reference")
        assert "1.500x" in step.notes[-1] and step.after_db == step.before_db


@pytest.mark.parametrize(
    ("after", "kept"),
    [((25.4, 0.2), False), ((27.9, 0.2), True), ((25.4, 0.0), True)],
)
def test_a_partial_repair_is_kept_only_if_it_costs_no_output_sqnr(
    after: tuple[float, float], kept: bool
) -> None:
    # Before the net: 27.4 dB on the calibration samples. A model that still misses the
    # floor (metric drop > 0) and loses SQNR is reverted; one that gains, or that holds the
    # floor, is kept (eq. I.9b).
    from eightbit.improve.budget import Measured

    sqnr, drop = after
    judge = lambda model: Measured(sqnr_db=sqnr, agreement=None, metric_drop=drop)  # noqa: E731
    why = eightbit.rebuild.net._partial_and_worse(
        judge, onnx.ModelProto(), lambda f, q: 0.0, start_sqnr=27.4
    )
    assert (why is None) == kept
    if not kept:
        assert why is not None and why.startswith("reverted: the floor is still missed")
        assert "loses 2.00 dB of output SQNR" in why


def test_a_partial_repair_that_costs_the_output_is_reverted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The wiring of eq. I.9b: its verdict (planted) reverts the net's model.
    monkeypatch.setattr(eightbit.rebuild.net, "latency_cap", lambda *args: LatencyCap(100.0, "x"))
    monkeypatch.setattr(eightbit.rebuild.net, "_partial_and_worse", lambda *args: "reverted: P")
    improve = replace(PRESETS["default"], separate_joins=False)
    result = eightbit.quantize(large_small_concat(), DATA, improve=improve)
    (step,) = [s for s in result.plan.steps if s.name == "safety_net"]
    assert step.notes[-1] == "reverted: P" and step.after_db == step.before_db
    assert result.plan.decision("head_concat").quantized


def test_the_recheck_times_the_nets_model_over_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import eightbit.safety_net as safety_net

    ours, theirs = onnx.ModelProto(), onnx.ModelProto()
    ours.doc_string, theirs.doc_string = "ours", "theirs"
    timed = {"ours": 12.0, "theirs": 10.0}
    monkeypatch.setattr(
        safety_net,
        "interleaved_medians_ms",
        lambda models, feed, runs, warmup: [timed[m.doc_string] for m in models],
    )
    cap = LatencyCap(0.5, "test", reference=theirs)
    assert cap.paired_ratio(ours, {}) == pytest.approx(1.2)
    assert LatencyCap(0.5, "test").paired_ratio(ours, {}) == 1.0  # no reference: no recheck


def test_the_safety_net_stops_where_the_calibration_samples_hold_the_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The held-back check reports a miss (planted) that the calibration samples, which the
    # net judges on, do not show: the net says so and stops before the latency cap.
    def never(*args, **kwargs) -> float:  # type: ignore[no-untyped-def]
        raise AssertionError("the latency cap was measured")

    def planted(check):  # type: ignore[no-untyped-def]
        return {check.outputs[0].name: "planted miss"}

    monkeypatch.setattr(eightbit.pipeline, "missed_floor", planted)
    monkeypatch.setattr(eightbit.rebuild.net, "latency_cap", never)
    model = models.conv_bn_relu()
    result = eightbit.quantize(model, models.random_inputs(model, n=40, seed=1))
    (step,) = [s for s in result.plan.steps if s.name == "safety_net"]
    (note,) = step.notes
    assert "planted miss" in note and "not run: the floor holds" in note


def test_the_safety_net_stays_off_when_the_floor_holds_or_is_turned_off(
    fast_result: eightbit.QuantizedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args, **kwargs) -> float:  # type: ignore[no-untyped-def]
        raise AssertionError("the safety net ran")

    monkeypatch.setattr(eightbit.rebuild.net, "latency_cap", never)
    # A model that meets the floor: no safety net.
    model = models.conv_bn_relu()
    result = eightbit.quantize(model, models.random_inputs(model, n=40, seed=1))
    assert result.check is not None
    assert all(o.worst_slice_sqnr_db >= SAFETY_FLOOR_DB for o in result.check.outputs)
    assert "safety_net" not in [s.name for s in result.plan.steps]
    # The collapse, but the safety net turned off: the fast preset, or the flag.
    assert "safety_net" not in [s.name for s in fast_result.plan.steps]
    improve = preset("default", separate_joins=False, safety_net=False)
    result = eightbit.quantize(large_small_concat(), DATA, improve=improve)
    assert result.check is not None and result.check.findings()
    assert "safety_net" not in [s.name for s in result.plan.steps]


def test_no_safety_net_flag_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def ran(*args, **kwargs) -> float:  # type: ignore[no-untyped-def]
        raise RuntimeError("the safety net ran")

    # Every check misses the floor here; only the flag keeps the net from running.
    planted = {"logits": "planted"}  # conv_bn_relu's only output
    monkeypatch.setattr(eightbit.pipeline, "missed_floor", lambda check: planted)
    monkeypatch.setattr(eightbit.pipeline.judging, "safety_net", ran)
    model = models.conv_bn_relu()
    model_path, data_path = tmp_path / "m.onnx", tmp_path / "d.npz"
    save_model(model, model_path)
    np.savez(data_path, **models.random_inputs(model, n=24, seed=3))
    args = ["quantize", str(model_path), "-d", str(data_path), "--json"]
    off = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a.onnx"), "--no-safety-net"])
    assert off.exit_code == 0, off.output
    on = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b.onnx")])
    assert isinstance(on.exception, RuntimeError)


def test_the_nodes_after_a_float_join_stay_float() -> None:
    model = large_small_concat()
    graph = model.graph
    graph.node.append(
        helper.make_node("Transpose", ["out"], ["out_t"], name="tail_t", perm=[0, 2, 3, 1])
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("out_t", TensorProto.FLOAT, None))
    plan = _plan(model)
    assert not plan.decision("head_concat").quantized
    tail = plan.decision("tail_t")
    assert not tail.quantized and tail.reason is not None and "head_concat" in tail.reason


def test_the_verdict_of_the_quick_check_is_the_numpy_oracle(
    fast_result: eightbit.QuantizedModel,
) -> None:
    check = fast_result.check
    assert check is not None
    (output,) = check.outputs
    # The held-back samples are the last ones of the data.
    held = {name: values[-check.samples :] for name, values in DATA.items()}
    (reference,) = run_onnxruntime(fast_result.float_model, held)
    (int8,) = run_onnxruntime(fast_result.model, held)
    expected = slice_verdict(reference, int8)
    assert expected is not None and output.slices is not None
    assert output.slices.worst_sqnr_db == pytest.approx(expected.worst_sqnr_db, abs=1e-9)
    assert output.slices.collapsed == expected.collapsed


def test_validate_and_the_report_flag_the_collapse(fast_result: eightbit.QuantizedModel) -> None:
    from eightbit.analysis import check_thresholds, validate
    from eightbit.report import build_report

    result = validate(fast_result.float_model, fast_result.model, DATA, layers=False)
    (output,) = result.outputs
    assert output.collapsed and output.worst_slice_sqnr_db is not None
    assert output.worst_slice_sqnr_db <= 0.0 < output.sqnr_db
    as_json = json.loads(json.dumps(result.to_dict()))
    assert [f["level"] for f in as_json["findings"]] == ["error"]
    assert as_json["outputs"][0]["collapsed"] is True
    # A threshold the whole output meets still fails on the collapse; without one, no failure.
    (failure,) = check_thresholds(result, min_sqnr=10.0)
    assert "collapsed" in failure
    assert check_thresholds(result) == ()
    report = build_report(fast_result.float_model, fast_result.model, DATA)
    # The report also times the models: a warning that int8 is slower may come beside it.
    assert [f.output for f in report.findings if f.level == "error"] == ["out"]
    assert report.notes[0].startswith("ERROR: int8 collapsed")


def test_the_cap_falls_back_to_eightbits_own_int8_when_onnx_runtime_fails(
    fast_result: eightbit.QuantizedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eightbit.safety_net as safety_net
    from eightbit.analysis.latency import LatencyRatio

    timer = LatencyRatio(fast_result.float_model, {name: v[:1] for name, v in DATA.items()})
    limit = safety_net.latency_cap(timer, fast_result.float_model, fast_result.model, [DATA])
    assert limit.ratio > 0 and "ONNX Runtime's own int8" in limit.what
    assert limit.reference is not None and limit.reference is not fast_result.model

    def broken(*args, **kwargs) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(safety_net, "ort_int8", broken)
    limit = safety_net.latency_cap(timer, fast_result.float_model, fast_result.model, [DATA])
    assert limit.ratio > 0 and "eightbit's int8 before the net" in limit.what
    assert "unsupported op" in limit.what and limit.reference is fast_result.model


def test_a_miss_on_an_output_the_budget_cannot_read_is_said_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*args, **kwargs) -> float:  # type: ignore[no-untyped-def]
        raise AssertionError("the fallback ran")

    monkeypatch.setattr(eightbit.rebuild.net, "latency_cap", never)
    monkeypatch.setattr(
        eightbit.pipeline, "missed_floor", lambda check: {"second": "output 'second': planted"}
    )
    model = models.conv_bn_relu()
    result = eightbit.quantize(model, models.random_inputs(model, n=40, seed=1))
    (step,) = [s for s in result.plan.steps if s.name == "safety_net"]
    assert "planted" in step.notes[0] and "first output only" in step.notes[0]


def test_without_a_tail_to_return_the_fallback_repairs_the_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        eightbit.rebuild.net, "latency_cap", lambda *args: LatencyCap(100.0, "100x (test)")
    )
    monkeypatch.setattr(eightbit.rebuild.net, "cheap_tail", lambda plan, graph: [])
    improve = replace(PRESETS["default"], separate_joins=False)
    result = eightbit.quantize(large_small_concat(), DATA, improve=improve)
    (step,) = [s for s in result.plan.steps if s.name == "safety_net"]
    assert step.layers  # the fallback returned nodes, each with its gain
    (slices,) = [note for note in step.notes if note.startswith("worst output slice")]
    assert "before 0.00 dB on 'out' (collapsed)" in slices
    assert result.check is not None and not result.check.findings()


def test_the_net_never_passes_its_latency_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        eightbit.rebuild.net, "latency_cap", lambda *args: LatencyCap(1e-6, "1e-06x (test)")
    )
    improve = replace(PRESETS["default"], separate_joins=False)
    result = eightbit.quantize(large_small_concat(), DATA, improve=improve)
    (step,) = [s for s in result.plan.steps if s.name == "safety_net"]
    assert "left int8" in step.notes[1] and not step.layers
    assert result.plan.decision("head_concat").quantized
    # Nothing could be done within the cap: the collapse is still reported, not hidden.
    assert result.check is not None and result.check.findings()


def test_the_first_rung_leaves_value_preserving_ops_to_their_neighbours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The Reshapes between the branches and the Concat have no calibrated range of their
    # own: named alone in the exclude list they would make planning fail.
    monkeypatch.setattr(
        eightbit.rebuild.net, "latency_cap", lambda *args: LatencyCap(100.0, "100x (test)")
    )
    improve = replace(PRESETS["default"], separate_joins=False)
    result = eightbit.quantize(large_small_concat(flatten=True), DATA, improve=improve)
    (step,) = [s for s in result.plan.steps if s.name == "safety_net"]
    assert "returned to float first" in step.notes[1] and "box_flat" not in step.notes[1]
    assert not result.plan.decision("box_flat").quantized  # float with its neighbours
    assert result.check is not None and not result.check.findings()


def test_a_net_model_that_loses_the_whole_output_is_reverted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A planted net that "repairs" the slices with a model whose output is far worse: the
    # quick check on the held-back samples must keep the model the net was given (§I.9).
    improve = replace(PRESETS["default"], separate_joins=False)
    broken = eightbit.quantize(large_small_concat(), DATA, improve="fast").model
    for tensor in broken.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if tensor.data_type == TensorProto.INT8 and array.ndim > 1:  # the weights, scrambled
            tensor.CopyFrom(numpy_helper.from_array(array[::-1, ::-1].copy(), tensor.name))
    real = eightbit.pipeline.judging.safety_net

    def net(*args, **kwargs):  # type: ignore[no-untyped-def]
        _, plan, report, promoted = real(*args, **kwargs)
        return broken, plan, report, promoted

    monkeypatch.setattr(eightbit.pipeline.judging, "safety_net", net)
    monkeypatch.setattr(
        eightbit.rebuild.net, "latency_cap", lambda *args: LatencyCap(100.0, "100x (test)")
    )
    result = eightbit.quantize(large_small_concat(), DATA, improve=improve)
    (step,) = [s for s in result.plan.steps if s.name == "safety_net"]
    assert step.notes[-1].startswith("reverted: the rebuilt model lost")
    assert step.after_db == step.before_db
    assert result.model is not broken
    assert result.check is not None and result.check.findings()  # the collapse is still said


def test_onnx_runtimes_quantizer_for_the_cap_is_quiet_and_leaves_the_root_logger(
    capfd: pytest.CaptureFixture[str],
) -> None:
    import logging

    import eightbit.safety_net as safety_net

    model = models.conv_bn_relu()
    # A shipped model whose declared output shape is not what it computes: ONNX Runtime's
    # calibration sessions warn about it on every sample.
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 5  # it computes 1 row
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        safety_net.ort_int8(model, [models.random_inputs(model, n=4)], 1)
        assert root.level == logging.INFO
    finally:
        root.setLevel(level)
    assert "VerifyOutputSizes" not in capfd.readouterr().err
