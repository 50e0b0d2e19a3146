"""The measuring models agree with running the float and int8 models separately."""

from __future__ import annotations

import numpy as np
import onnx

from eightbit.analysis.metrics import sqnr_db
from eightbit.calibrate import CalibrationConfig, calibrate
from eightbit.export import to_qdq
from eightbit.graph import Graph, normalize
from eightbit.improve._onnx import Reduction
from eightbit.improve.measure import OutputReference, compare, read_samples, run_reductions
from eightbit.plan import activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig
from tests.improve.helpers import conv_pair, inputs, run


def _quantized() -> tuple[onnx.ModelProto, onnx.ModelProto, np.ndarray]:
    model = normalize(conv_pair("Clip", spread=10.0))
    x = inputs(model, n=20)
    graph = Graph(model)
    needed = activation_tensors_to_calibrate(graph, QuantConfig())
    ranges = calibrate(model, {"input": x}, CalibrationConfig(), tensors=needed)
    return model, to_qdq(model, make_plan(graph, ranges, QuantConfig())), x


def test_compare_matches_separate_runs() -> None:
    model, quantized, x = _quantized()
    batches = read_samples({"input": x}, Graph(model), 20)
    assert len(batches) == 2  # 16 + 4: sums must add over batches
    result = compare(model, quantized, batches, {"mid": "mid"}, ["input", "mid"], output_rank=4)
    expected_output = sqnr_db(run(model, x), run(quantized, x))
    assert abs(result.output_db - expected_output) < 1e-3
    float_mid = _exposed(model, x, "mid")
    int8_mid = _exposed(quantized, x, "mid")
    assert abs(result.layers["mid"] - sqnr_db(float_mid, int8_mid)) < 1e-3
    np.testing.assert_allclose(result.means["input"], x.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.means["mid"], float_mid.mean(axis=0), rtol=1e-4, atol=1e-6)
    shift = (run(quantized, x) - run(model, x)).mean(axis=(0, 2, 3))
    assert result.output_shift is not None
    np.testing.assert_allclose(result.output_shift, shift, rtol=1e-4, atol=1e-6)
    reference = OutputReference(model, batches, None)
    assert abs(reference.sqnr(quantized) - expected_output) < 1e-3


def test_reductions_combine_over_batches() -> None:
    model, _, x = _quantized()
    batches = read_samples({"input": x}, Graph(model), 20)
    totals = run_reductions(
        model,
        [Reduction("pre", "max_abs", 1, 4), Reduction("pre", "min", 1, 4)],
        batches,
    )
    pre = _exposed(model, x, "pre")
    np.testing.assert_allclose(totals["pre|max_abs"], np.abs(pre).max(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(totals["pre|min"], pre.min(axis=(0, 2, 3)), rtol=1e-6)


def _exposed(model: onnx.ModelProto, x: np.ndarray, tensor: str) -> np.ndarray:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    return run(exposed, x, tensor)
