"""The main job end to end: quantize() on test models, the quick check, reuse of ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import eightbit
from eightbit.calibrate import CalibrationConfig, calibrate
from eightbit.errors import ConfigError, DataError
from eightbit.graph import Graph, load_model, normalize
from eightbit.pipeline import _split, plan_path_for
from eightbit.plan import QuantPlan, activation_tensors_to_calibrate
from eightbit.quant import QuantConfig
from tests.fixtures import models


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
    assert reused.plan == result.plan


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
