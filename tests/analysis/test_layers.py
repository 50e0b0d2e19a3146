"""Per-layer SQNR against ONNX Runtime and numpy oracles; a planted bad scale ranks first."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from eightbit.analysis import RunOptions, layer_analysis, load_pair, validate
from eightbit.analysis.metrics import sqnr_db
from eightbit.analysis.side_by_side import measure, own_sqnrs
from eightbit.analysis.variants import with_fake_quant, without_quantization
from eightbit.calibrate import open_data
from eightbit.graph import with_outputs
from eightbit.graph.session import EXACT_INT8_ENTRY
from eightbit.quant import dequantize_values, quantize_values
from tests.analysis.helpers import classifier, images, quantize, with_scale

DATA = {"input": images(40, seed=5)}
OPTIONS = RunOptions(batch_size=16)


def run(model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry(*EXACT_INT8_ENTRY)
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return [np.asarray(v) for v in session.run(names, feeds)]


@pytest.fixture(scope="module")
def quantized():  # type: ignore[no-untyped-def]
    return quantize(classifier(), images(32))


def test_sqnrs_match_onnxruntime_and_numpy_oracles(quantized) -> None:  # type: ignore[no-untyped-def]
    analysis = layer_analysis(
        quantized.float_model, quantized.qdq, DATA, what_if=0, options=OPTIONS
    )
    by_name = {report.name: report for report in analysis.activations}
    assert set(by_name) == {"input", "r1", "r2", "sum", "pooled", "flat", "logits"}
    names = ["r2", "sum"]
    floats = run(with_outputs(quantized.float_model, names), names, DATA)
    int8s = run(with_outputs(quantized.qdq, names), names, DATA)
    for name, f, q in zip(names, floats, int8s, strict=True):
        params = quantized.plan.tensors[name]
        own = sqnr_db(f, dequantize_values(quantize_values(f, params), params))
        assert by_name[name].sqnr_own_db == pytest.approx(own, abs=1e-9)
        assert by_name[name].sqnr_accumulated_db == pytest.approx(sqnr_db(f, q), abs=1e-6)
        assert by_name[name].range.total == f.size
    # Accumulated error only grows along the chain conv1 -> conv2 (no independent layer).
    assert by_name["r2"].sqnr_accumulated_db < by_name["r1"].sqnr_accumulated_db


def test_weight_sqnr_is_of_the_stored_int8_weights(quantized) -> None:  # type: ignore[no-untyped-def]
    analysis = layer_analysis(
        quantized.float_model, quantized.qdq, DATA, what_if=0, options=OPTIONS
    )
    weights = {report.name: report for report in analysis.weights}
    assert set(weights) == {"w1", "w2", "fc_w"}  # int32 biases have no 8-bit window
    w2 = initializer(quantized.float_model, "w2")
    params = quantized.plan.tensors["w2"]
    stored = dequantize_values(quantize_values(w2, params), params)
    assert weights["w2"].sqnr_own_db == pytest.approx(sqnr_db(w2, stored))
    assert weights["w2"].node == "conv2" and weights["w2"].op_type == "Conv"
    assert weights["w2"].range.overflow == 0


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


@pytest.mark.parametrize(("tensor", "factor"), [("r2", 1 / 16), ("sum", 1 / 16), ("r1", 32.0)])
def test_a_planted_wrong_scale_ranks_first(quantized, tensor: str, factor: float) -> None:  # type: ignore[no-untyped-def]
    planted = with_scale(quantized.qdq, tensor, factor)
    analysis = layer_analysis(quantized.float_model, planted, DATA, what_if=1, options=OPTIONS)
    worst = analysis.ranked()[0]
    assert worst.name == tensor
    runner_up = analysis.ranked()[1]
    assert worst.sqnr_own_db is not None and runner_up.sqnr_own_db is not None
    assert worst.sqnr_own_db < runner_up.sqnr_own_db - 10
    dynamic = worst.range
    if factor < 1:
        assert dynamic.overflow_fraction > 0.05  # a scale 16× too small clips
    else:
        # a scale 32× too large rounds small values to zero (half of a ReLU output is 0 anyway)
        assert dynamic.underflow_fraction > 0.1
    (what_if,) = analysis.what_if
    assert what_if.tensor == tensor
    full = (
        validate(quantized.float_model, planted, DATA, layers=False, options=OPTIONS)
        .outputs[0]
        .sqnr_db
    )
    # Keeping the planted tensor float recovers most of the output SQNR.
    assert what_if.kept_float[0].sqnr_db > full + 6
    assert what_if.only_quantized[0].sqnr_db < what_if.kept_float[0].sqnr_db


def test_fake_quant_on_one_tensor_matches_numpy(quantized) -> None:  # type: ignore[no-untyped-def]
    params = quantized.plan.tensors["sum"]
    variant = with_fake_quant(quantized.float_model, "sum", params)
    onnx.checker.check_model(variant)
    (got,) = run(with_outputs(variant, ["sum"]), ["sum"], DATA)
    (clean,) = run(with_outputs(quantized.float_model, ["sum"]), ["sum"], DATA)
    np.testing.assert_array_equal(got, dequantize_values(quantize_values(clean, params), params))
    # A graph input keeps its name; only its readers see the quantized copy.
    variant = with_fake_quant(quantized.float_model, "input", quantized.plan.tensors["input"])
    onnx.checker.check_model(variant)
    assert [value.name for value in variant.graph.input] == ["input"]


def test_keeping_a_folded_relu_node_float_restores_the_clamp(quantized) -> None:  # type: ignore[no-untyped-def]
    pair = load_pair(quantized.float_model, quantized.qdq)
    activation = pair.qdq.activation("r1")
    assert activation.source == "c1"  # conv1's Relu was folded into the quantization
    variant = without_quantization(pair.int8_model, activation, pair.qdq, pair.float_graph)
    onnx.checker.check_model(variant)
    op_types = [node.op_type for node in variant.graph.node]
    assert op_types.count("Relu") == 1
    (got,) = run(with_outputs(variant, ["r2"]), ["r2"], DATA)
    assert got.min() >= 0.0
    (r1,) = run(with_outputs(variant, ["c1"]), ["c1"], DATA)
    (float_c1,) = run(with_outputs(quantized.float_model, ["c1"]), ["c1"], DATA)
    # conv1 reads the quantized input but its weights are the float ones again.
    assert sqnr_db(float_c1, r1) > 40


def test_keeping_the_output_float_keeps_its_name(quantized) -> None:  # type: ignore[no-untyped-def]
    pair = load_pair(quantized.float_model, quantized.qdq)
    variant = without_quantization(
        pair.int8_model, pair.qdq.activation("logits"), pair.qdq, pair.float_graph
    )
    onnx.checker.check_model(variant)
    (logits,) = run(variant, ["logits"], DATA)
    (quantized_logits,) = run(quantized.qdq, ["logits"], DATA)
    (float_logits,) = run(quantized.float_model, ["logits"], DATA)
    assert sqnr_db(float_logits, logits) > sqnr_db(float_logits, quantized_logits)


def test_the_ranking_pass_gives_the_own_sqnr_the_full_analysis_gives(quantized) -> None:  # type: ignore[no-untyped-def]
    """``own_sqnrs`` skips the range counts and the int8 model; its numbers must not move."""
    pair = load_pair(quantized.float_model, quantized.qdq)

    def source():  # type: ignore[no-untyped-def]
        return open_data(DATA, pair.float_graph.inputs, batch_size=16)

    full = measure(pair, source(), compare=False)
    fast = own_sqnrs(pair, source())
    assert fast == {report.name: report.sqnr_own_db for report in full.activations}
    assert len(fast) >= 4 and "input" in fast
