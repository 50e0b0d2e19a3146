"""The main job end to end: quantize() on test models, the quick check, reuse of ranges."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

import eightbit
from eightbit.calibrate import CalibrationConfig, calibrate
from eightbit.errors import ConfigError, DataError
from eightbit.graph import Graph, load_model, normalize
from eightbit.improve.presets import ImproveConfig
from eightbit.pipeline import _split, plan_path_for, quick_check
from eightbit.plan import QuantPlan, activation_tensors_to_calibrate
from eightbit.quant import QuantConfig
from tests.fixtures import models
from tests.improve.helpers import conv_pair, inputs


def _data(model: onnx.ModelProto, n: int = 40) -> dict[str, np.ndarray]:
    return models.random_inputs(model, n=n, seed=1)


def test_quantize_returns_model_plan_and_check(tmp_path: Path) -> None:
    model = models.conv_bn_relu()
    result = eightbit.quantize(model, _data(model))
    assert result.plan.quantized_nodes()
    assert {n.op_type for n in result.model.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    onnx.checker.check_model(result.model, full_check=True)
    # 40 samples: a fifth (8) is held back for the check, 32 calibrate.
    assert result.check is not None and result.check.samples == 8
    assert result.calibration_samples == 32
    (output,) = result.check.outputs
    assert output.sqnr_db > 20
    assert output.top1_agreement is not None and output.top1_agreement >= 0.75

    path = tmp_path / "int8.onnx"
    plan_path = result.save(path)
    assert plan_path == plan_path_for(path) == tmp_path / "int8.plan.json"
    assert QuantPlan.load(plan_path) == result.plan
    assert load_model(path).graph.node


def test_quantize_with_saved_ranges_skips_calibration(tmp_path: Path) -> None:
    model = normalize(models.conv_bn_relu())
    config = QuantConfig()
    needed = activation_tensors_to_calibrate(Graph(model), config)
    ranges = calibrate(model, _data(model), CalibrationConfig(method="minmax"), tensors=needed)
    result = eightbit.quantize(model, _data(model, 8), config, ranges=ranges)
    assert result.check is not None and result.check.samples == 8
    reused = eightbit.quantize(model, None, config, ranges=ranges)
    assert reused.check is None
    # The same plan; the steps' reports differ only in how long they took.
    assert replace(reused.plan, steps=()) == replace(result.plan, steps=())
    assert [s.name for s in reused.plan.steps] == [s.name for s in result.plan.steps]


def test_ranges_for_another_model_are_refused() -> None:
    model = models.conv_bn_relu()
    other = normalize(models.two_inputs())
    ranges = calibrate(other, _data(other), CalibrationConfig(method="minmax"))
    with pytest.raises(ConfigError, match="rerun eightbit calibrate"):
        eightbit.quantize(model, None, ranges=ranges)


def test_quantize_needs_data_or_ranges() -> None:
    with pytest.raises(ConfigError, match="calibration data"):
        eightbit.quantize(models.conv_bn_relu(), None)


def test_mismatched_data_names_the_input() -> None:
    model = models.conv_bn_relu()
    with pytest.raises(DataError):
        eightbit.quantize(model, np.zeros((4, 7, 2, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("total", "samples", "check", "expected"),
    [
        (40, None, None, (32, 8)),  # a fifth held back
        (1000, None, None, (936, 64)),  # capped at 64
        (1000, 100, None, (100, 64)),  # --samples limits calibration only
        (10, None, 0, (10, 0)),  # check disabled
        (1, None, 5, (1, 0)),  # never take the last calibration sample
    ],
)
def test_split_between_calibration_and_check(
    total: int, samples: int | None, check: int | None, expected: tuple[int, int]
) -> None:
    class Source:
        pass

    source = Source()
    source.samples = total  # type: ignore[attr-defined]
    config = CalibrationConfig(samples=samples)
    assert _split(source, config, check, True) == expected  # type: ignore[arg-type]


def test_default_steps_are_recorded_and_the_check_uses_the_original_model() -> None:
    model = normalize(conv_pair("Clip", depthwise=True, spread=20.0))
    data = {"input": inputs(model, n=40)}
    result = eightbit.quantize(model, data)
    names = [step.name for step in result.plan.steps]
    # Its output is under 40 dB: default's rule reconstructs the weights (§I.8.3).
    assert names == ["equalize", "clipping", "bias_correction", "reconstruct"]
    assert result.plan.steps[0].notes[0].startswith("1 pair(s) equalized")
    # The QDQ model quantizes the prepared (equalized) model; the check compares it with
    # the original, which keeps its tensor names.
    assert result.prepared_model is not None
    prepared = {n for node in result.prepared_model.graph.node for n in node.input}
    original = {n for node in result.float_model.graph.node for n in node.input}
    assert "mid_equalized" in prepared and "mid_equalized" not in original
    held_back = {"input": data["input"][-8:]}
    again = quick_check(result.float_model, result.model, [held_back])
    assert result.check == again


def test_fast_preset_runs_no_step_and_names_are_checked() -> None:
    model = models.conv_bn_relu()
    result = eightbit.quantize(model, _data(model), improve="fast")
    assert result.plan.steps == ()
    with pytest.raises(ConfigError, match="'preset' must be one of"):
        eightbit.quantize(model, _data(model), improve="fastest")
    with pytest.raises(ConfigError, match="'improve' must be an ImproveConfig"):
        eightbit.quantize(model, _data(model), improve=3)  # type: ignore[arg-type]


def test_without_data_bias_correction_uses_batchnorm_statistics() -> None:
    exported = models.conv_bn_relu()
    model = normalize(exported)
    config = QuantConfig()
    needed = activation_tensors_to_calibrate(Graph(model), config)
    ranges = calibrate(model, _data(model), CalibrationConfig(), tensors=needed)
    result = eightbit.quantize(exported, None, config, ranges=ranges)
    equalized, corrected = result.plan.steps
    assert equalized.notes == ("skipped: the ranges from a file describe the model as is",)
    assert "BatchNormalization statistics" in corrected.notes[0]


def test_steps_that_need_calibration_samples_refuse_saved_ranges() -> None:
    model = normalize(models.conv_bn_relu())
    needed = activation_tensors_to_calibrate(Graph(model), QuantConfig())
    ranges = calibrate(model, _data(model), CalibrationConfig(), tensors=needed)
    for improve in (ImproveConfig(min_sqnr=30.0), ImproveConfig(adaround=True)):
        with pytest.raises(ConfigError, match="needs calibration samples"):
            eightbit.quantize(model, _data(model, 8), ranges=ranges, improve=improve)


def test_fallback_is_wired_and_restores_float_constants() -> None:
    model = normalize(conv_pair("Relu", spread=20.0))
    data = {"input": inputs(model, n=40)}
    # An SQNR no int8 model reaches: every node goes back to float, one at a time.
    improve = ImproveConfig(min_sqnr=200.0, reconstruct=False)  # the nearest weights
    result = eightbit.quantize(model, data, improve=improve)
    assert [step.name for step in result.plan.steps][-1] == "fallback"
    report = result.plan.steps[-1]
    assert report.layers and "budget not met" in report.notes[0]
    kept_float = {d.name for d in result.plan.fallbacks()}
    assert "second" in kept_float or "first" in kept_float
    # A node back in float computes with the planned bias, not the one corrected for int8.
    planned = {t.name: t for t in model.graph.initializer}
    for node in result.model.graph.node:
        if node.name in kept_float and node.op_type == "Conv" and len(node.input) > 2:
            bias = next(t for t in result.model.graph.initializer if t.name == node.input[2])
            assert bias == planned[node.input[2]]


def test_fallback_latency_cap_is_wired() -> None:
    model = normalize(conv_pair("Relu", spread=20.0))
    data = {"input": inputs(model, n=40)}
    # No model runs in a millionth of the float latency: nothing may be returned.
    improve = ImproveConfig(min_sqnr=200.0, max_latency=1e-6, reconstruct=False)
    result = eightbit.quantize(model, data, improve=improve, check_samples=0)
    report = result.plan.steps[-1]
    assert report.name == "fallback" and report.layers == ()
    assert "the float latency, above max_latency 1e-06" in report.notes[0]
    assert not result.plan.fallbacks()


def test_fallback_decides_before_reconstruction_which_keeps_float_nodes_float() -> None:
    model = normalize(conv_pair("Relu", spread=20.0))
    data = {"input": inputs(model, n=40)}
    improve = ImproveConfig(equalize=False, reconstruct=True, min_sqnr=200.0)
    result = eightbit.quantize(model, data, improve=improve, check_samples=0)
    names = [step.name for step in result.plan.steps]
    # §R.9: the budget is judged on nearest rounding, the weights are learned afterwards.
    assert names == ["clipping", "fallback", "reconstruct", "bias_correction"]
    assert "decided with nearest rounding" in result.plan.steps[1].notes[-1]
    kept_float = {d.name for d in result.plan.fallbacks()}
    assert kept_float and set(result.plan.config.exclude) >= kept_float
    reconstructed = {gain.layer for gain in result.plan.steps[2].layers}
    assert reconstructed and not reconstructed & kept_float
    planned = {t.name: t for t in model.graph.initializer}
    stored = {t.name: t for t in result.model.graph.initializer}
    float_convs = [
        n for n in result.model.graph.node if n.name in kept_float and n.op_type == "Conv"
    ]
    assert float_convs
    for node in float_convs:
        assert stored[node.input[1]] == planned[node.input[1]]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs PyTorch")
def test_adaround_is_wired() -> None:
    model = normalize(conv_pair("Relu", spread=5.0))
    data = {"input": inputs(model, n=24)}
    improve = ImproveConfig(equalize=False, adaround=True, adaround_iters=20)
    result = eightbit.quantize(model, data, improve=improve, check_samples=0)
    assert [step.name for step in result.plan.steps] == ["clipping", "adaround", "bias_correction"]
