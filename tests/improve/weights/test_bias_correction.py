"""Bias correction (docs/numerics.md §I.3): the output shift weight rounding causes
is removed exactly on the data it was measured on; the analytic form matches sampling; the
adaptive step reverts a correction that lowered the output SQNR."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from eightbit.calibrate import CalibrationConfig, calibrate
from eightbit.export import to_qdq
from eightbit.graph import Graph, load_model, normalize
from eightbit.improve.measure import Compared
from eightbit.improve.weights import bias_correction as module
from eightbit.improve.weights.bias_correction import (
    ChannelNormal,
    batchnorm_statistics,
    bias_correction,
    clipped_normal_mean,
)
from eightbit.plan import QuantPlan, activation_tensors_to_calibrate, make_plan, rebias
from eightbit.quant import QuantConfig, dequantize_values, quantize_values
from tests.fixtures import models
from tests.improve.helpers import conv_pair, inputs, run


def _planned(model: onnx.ModelProto, x: np.ndarray) -> QuantPlan:
    config = QuantConfig()
    graph = Graph(model)
    needed = activation_tensors_to_calibrate(graph, config)
    ranges = calibrate(model, {"input": x}, CalibrationConfig(method="minmax"), tensors=needed)
    return make_plan(graph, ranges, config)


def _with_planted_rounding_error(model: onnx.ModelProto, plan: QuantPlan) -> onnx.ModelProto:
    """Move every weight of 'second' 0.45 steps off its grid point, always upward: rounding
    then takes each weight down by 0.45 steps, a strongly biased (not zero-mean) error."""
    graph = Graph(model)
    name = graph.node("second").inputs[1]
    params = plan.tensors[name]
    grid = dequantize_values(quantize_values(graph.initializers[name], params), params)
    planted = grid + 0.45 * params.scale.reshape(-1, 1, 1, 1)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    for tensor in result.graph.initializer:
        if tensor.name == name:
            tensor.CopyFrom(numpy_helper.from_array(planted.astype(np.float32), name))
    return result


def _float_with_int8_weights(model: onnx.ModelProto, plan: QuantPlan) -> onnx.ModelProto:
    """The float model computing with the weights as the int8 model stores them."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    for tensor in result.graph.initializer:
        params = plan.tensors.get(tensor.name)
        if params is not None and params.dtype == "int8":
            values = numpy_helper.to_array(tensor)
            stored = dequantize_values(quantize_values(values, params), params)
            tensor.CopyFrom(numpy_helper.from_array(stored, tensor.name))
    return result


@pytest.mark.parametrize("depthwise", [False, True])
def test_planted_per_channel_shift_is_removed_exactly(depthwise: bool) -> None:
    # With a tail, 'second' does not write the output: only the weight shift is corrected.
    base = normalize(conv_pair("Relu", depthwise=depthwise, second_bias=not depthwise, tail=True))
    x = inputs(base, n=24)
    model = _with_planted_rounding_error(base, _planned(base, x))
    plan = _planned(model, x)
    shift_before = _mean_shift(model, plan, model, x)
    assert np.abs(shift_before).max() > 0.05  # the planted error shows

    corrected, report = bias_correction(model, plan, {"input": x}, keep="always", samples=24)
    new_plan = rebias(Graph(corrected), plan)
    # Oracle: full per-sample convolutions in ONNX Runtime, not the mean-image shortcut.
    shift_after = _mean_shift(corrected, new_plan, model, x)
    np.testing.assert_allclose(shift_after, 0.0, atol=2e-5 * np.abs(shift_before).max() + 1e-6)
    assert report.layers and {g.layer for g in report.layers} == {"first", "second"}
    assert any("corrected from 24 calibration samples" in n for n in report.notes)


def _mean_shift(
    model: onnx.ModelProto, plan: QuantPlan, reference: onnx.ModelProto, x: np.ndarray
) -> np.ndarray:
    """Per output channel of 'second', on its float input: the mean of (its int8 weights and
    the model's bias) − (the reference layer). The oracle runs every sample through ONNX
    Runtime, where the step only ran the layer once, on the mean input."""
    tensor = Graph(reference).node("second").inputs[0]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(reference)
    exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    float_input = run(exposed, x, tensor)
    quantized = run(_only_second(_float_with_int8_weights(model, plan), tensor), float_input)
    exact = run(_only_second(reference, tensor), float_input)
    return np.asarray((quantized - exact).mean(axis=(0, 2, 3)), np.float64)


def _only_second(model: onnx.ModelProto, tensor: str) -> onnx.ModelProto:
    """The layer 'second' alone, reading ``tensor`` as its graph input."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    kept = [node for node in graph.node if node.name == "second"]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.input[:]
    graph.input.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    del graph.value_info[:]
    del graph.output[:]
    graph.output.append(onnx.helper.make_empty_tensor_value_info(kept[0].output[0]))
    return result


def test_the_output_layer_matches_the_float_output_mean_in_the_int8_model() -> None:
    model = normalize(conv_pair("Relu", spread=5.0, seed=1))
    x = inputs(model, n=32)
    plan = _planned(model, x)
    before = (run(to_qdq(model, plan), x) - run(model, x)).mean(axis=(0, 2, 3))
    corrected, report = bias_correction(model, plan, {"input": x}, keep="always", samples=32)
    # On this model the output correction raises the SQNR, so the step keeps it.
    assert any("output layer 'second'" in note for note in report.notes)
    quantized = to_qdq(corrected, rebias(Graph(corrected), plan))
    after = (run(quantized, x) - run(model, x)).mean(axis=(0, 2, 3))
    # Exact but for the rounding of the int32 bias and of the output's own quantization.
    output_step = float(plan.tensors["output"].scale)
    assert np.abs(after).max() < max(0.1 * np.abs(before).max(), output_step / 4)


def test_a_missing_bias_is_added() -> None:
    model = normalize(conv_pair("Relu", second_bias=False))
    x = inputs(model, n=16)
    plan = _planned(model, x)
    corrected, _ = bias_correction(model, plan, {"input": x}, keep="always", samples=16)
    second = Graph(corrected).node("second")
    assert len(second.inputs) == 3 and second.inputs[2]
    assert second.inputs[2] in rebias(Graph(corrected), plan).tensors


def test_adaptive_correction_reverts_when_the_output_got_worse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = normalize(conv_pair("Relu"))
    x = inputs(model, n=16)
    plan = _planned(model, x)
    real = module.compare
    calls: list[int] = []

    def worse_after(*args: object, **kwargs: object) -> Compared:
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(1)
        return Compared(result.layers, 30.0 - len(calls), result.means, result.output_shift)

    monkeypatch.setattr(module, "compare", worse_after)
    returned, report = bias_correction(model, plan, {"input": x}, samples=16)
    assert returned is model
    assert report.before_db == report.after_db == 29.0
    assert any(note.startswith("reverted") for note in report.notes)


def test_clipped_normal_mean_matches_sampling() -> None:
    rng = np.random.default_rng(0)
    mean, std = np.array([-1.0, 0.0, 0.7, 3.0, 2.0]), np.array([1.0, 2.0, 0.5, 1.5, 0.0])
    for low, high in ((0.0, math.inf), (0.0, 6.0), (-math.inf, math.inf), (-0.5, 1.0)):
        expected = clipped_normal_mean(ChannelNormal(mean, std), low, high)
        samples = np.clip(rng.normal(mean, std, (400_000, mean.size)), low, high)
        np.testing.assert_allclose(expected, samples.mean(axis=0), atol=0.01)


def test_analytic_correction_from_batchnorm_statistics() -> None:
    exported = models.conv_bn_relu()
    statistics = batchnorm_statistics(exported)
    assert statistics  # the fixture's BN outputs
    model = normalize(exported)
    data = models.random_inputs(model, n=16, seed=2)
    config = QuantConfig()
    graph = Graph(model)
    ranges = calibrate(
        model, data, CalibrationConfig(), tensors=activation_tensors_to_calibrate(graph, config)
    )
    plan = make_plan(graph, ranges, config)
    corrected, report = bias_correction(model, plan, None, statistics=statistics)
    assert report.before_db is None and "BatchNormalization statistics" in report.notes[0]
    changed = _changed_biases(model, corrected)
    corrected_layers = int(report.notes[0].split()[0])
    assert len(changed) == corrected_layers


def _changed_biases(before: onnx.ModelProto, after: onnx.ModelProto) -> list[str]:
    old = {t.name: numpy_helper.to_array(t) for t in before.graph.initializer}
    changed = []
    for node in after.graph.node:
        if len(node.input) > 2 and node.input[2]:
            new = next(t for t in after.graph.initializer if t.name == node.input[2])
            if node.input[2] not in old or not np.array_equal(
                old[node.input[2]], numpy_helper.to_array(new)
            ):
                changed.append(node.name)
    return changed


def test_batchnorm_statistics_are_gamma_and_beta(tmp_path: object) -> None:
    exported = models.conv_bn_relu()
    constants = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    bn = next(n for n in exported.graph.node if n.op_type == "BatchNormalization")
    stats = batchnorm_statistics(load_model(exported))[bn.output[0]]
    np.testing.assert_array_equal(stats.mean, constants[bn.input[2]])
    np.testing.assert_array_equal(stats.std, np.abs(constants[bn.input[1]]))


def test_a_model_without_correctable_layers_is_returned_as_is() -> None:
    model = normalize(models.two_inputs())  # Add and MatMul: no bias input anywhere
    data = models.random_inputs(model, n=8, seed=1)
    config = QuantConfig()
    graph = Graph(model)
    needed = activation_tensors_to_calibrate(graph, config)
    plan = make_plan(graph, calibrate(model, data, CalibrationConfig(), tensors=needed), config)
    returned, report = bias_correction(model, plan, data)
    assert returned is model
    assert report.notes[0] == "no quantized layer with a bias input to correct"


def test_after_learned_rounding_only_the_output_layer_is_corrected() -> None:
    model = normalize(conv_pair("Relu", spread=5.0, seed=1))
    x = inputs(model, n=32)
    plan = _planned(model, x)
    corrected, report = bias_correction(
        model, plan, {"input": x}, keep="always", weight_shifts=False, samples=32
    )
    assert report.notes[0].startswith("weights as learned rounding chose them")
    assert _changed_biases(model, corrected) == ["second"]  # the output layer only
