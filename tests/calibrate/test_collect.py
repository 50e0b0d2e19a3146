"""calibrate() end to end on small models: numpy oracles, batching, tensors, errors, memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eightbit.calibrate import CalibrationConfig, Ranges, calibrate
from eightbit.errors import ConfigError, DataError
from eightbit.graph import Graph, make_session, normalize, with_outputs
from tests.fixtures import models


def activations(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float activation of the normalized model, from one run over all the data."""
    prepared = normalize(model)
    graph = Graph(prepared)
    inputs = {info.name for info in graph.inputs}
    names = [n for n in graph.float_activations() if n not in inputs]
    session = make_session(with_outputs(prepared, names), threads=1)
    values = dict(zip(names, session.run(names, feeds), strict=True))
    values.update({name: feeds[name] for name in graph.float_activations() if name in inputs})
    return values


@pytest.mark.parametrize("dynamic_batch", [True, False])
def test_minmax_equals_numpy_on_the_same_activations(dynamic_batch: bool) -> None:
    model = models.conv_bn_relu(dynamic_batch=dynamic_batch)
    feeds = models.random_inputs(models.conv_bn_relu(), n=30, seed=3)
    if dynamic_batch:
        expected = activations(model, feeds)
    else:  # a fixed batch of 1: the oracle runs the same data through the dynamic twin
        expected = activations(models.conv_bn_relu(), feeds)
    ranges = calibrate(model, feeds, CalibrationConfig(method="minmax", batch_size=7))
    assert set(ranges) == set(expected)
    for name, values in expected.items():
        assert (ranges[name].min, ranges[name].max) == (values.min(), values.max()), name
        assert (ranges[name].observed_min, ranges[name].observed_max) == (
            values.min(),
            values.max(),
        )
    assert ranges.samples == 30 and ranges.method == "minmax"


def test_two_inputs_are_both_fed_and_observed() -> None:
    model = models.two_inputs()
    feeds = models.random_inputs(model, n=9, seed=1)
    ranges = calibrate(model, feeds, CalibrationConfig(method="minmax", batch_size=4))
    expected = activations(model, feeds)
    assert set(ranges) == set(expected) >= {"a", "b"}
    for name in ("a", "b"):
        assert ranges[name].max == feeds[name].max()


def test_integer_inputs_are_fed_but_not_calibrated() -> None:
    model = models.int32_input()
    feeds = models.random_inputs(model, n=6, seed=2)
    ranges = calibrate(model, feeds)
    assert "ids" not in ranges
    assert {"x", "embedded", "summed", "output"} <= set(ranges)


def test_histogram_methods_share_observations_exactly() -> None:
    model = models.conv_bn_relu()
    feeds = models.random_inputs(model, n=20, seed=4)
    by_percentile = calibrate(model, feeds, CalibrationConfig(method="percentile"))
    for method in ("entropy", "mse", "minmax"):
        direct = calibrate(model, feeds, CalibrationConfig(method=method))
        assert dict(by_percentile.reselect(method)) == dict(direct)


def test_batch_size_does_not_change_histogram_ranges() -> None:
    model = models.conv_bn_relu()
    feeds = models.random_inputs(model, n=13, seed=5)
    one = calibrate(model, feeds, CalibrationConfig(batch_size=13))
    many = calibrate(model, feeds, CalibrationConfig(batch_size=3))
    assert dict(one) == dict(many)
    for name in one:
        assert one.histogram(name) == many.histogram(name)


def test_ranges_round_trip_through_files(tmp_path: Path) -> None:
    model = models.conv_bn_relu()
    ranges = calibrate(model, models.random_inputs(model, n=8), CalibrationConfig(method="mse"))
    ranges.save(tmp_path / "r.json")
    loaded = Ranges.load(tmp_path / "r.json")
    assert dict(loaded) == dict(ranges)
    assert loaded.reselect("entropy") == ranges.reselect("entropy")


def test_requested_tensors_are_checked() -> None:
    model = models.conv_bn_relu()
    feeds = models.random_inputs(model, n=4)
    ranges = calibrate(model, feeds, tensors=["relu_out", "input"])
    assert list(ranges) == ["relu_out", "input"]
    with pytest.raises(ConfigError, match="no tensor 'relu' to calibrate; did you mean 'relu_out'"):
        calibrate(model, feeds, tensors=["relu"])
    with pytest.raises(ConfigError, match=r"'conv\.weight' is a constant"):
        calibrate(model, feeds, tensors=["conv.weight"])
    with pytest.raises(ConfigError, match="must be a sequence of names"):
        calibrate(model, feeds, tensors="relu_out")
    int_model = models.int32_input()
    with pytest.raises(ConfigError, match="'ids' holds int32 values"):
        calibrate(int_model, models.random_inputs(int_model, n=2), tensors=["ids"])


def _log_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Log", ["x"], ["y"], name="log")],
        "log",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_nonfinite_activation_names_the_tensor_and_samples() -> None:
    data = np.ones((6, 2), np.float32)
    data[4, 1] = -1.0  # log(-1) = NaN
    with pytest.raises(DataError, match=r"tensor 'y' is NaN or infinite for samples 4\.\.5"):
        calibrate(_log_model(), data, CalibrationConfig(batch_size=2))


def test_no_usable_samples_is_an_error() -> None:
    with pytest.raises(DataError, match="holds no samples"):
        calibrate(_log_model(), np.ones((0, 2), np.float32))
    nan = np.full((3, 2), np.nan, np.float32)
    with pytest.raises(DataError, match="all 3 samples of the data contain NaN"):
        calibrate(_log_model(), nan, CalibrationConfig(skip_nonfinite=True))


def test_skipped_samples_are_counted() -> None:
    data = np.linspace(1.0, 2.0, 10, dtype=np.float32).reshape(5, 2)  # varied samples
    data[2] = np.inf
    ranges = calibrate(_log_model(), data, CalibrationConfig(skip_nonfinite=True))
    assert (ranges.samples, ranges.skipped) == (4, 1)


def test_samples_limits_the_data() -> None:
    model = models.conv_bn_relu()
    feeds = models.random_inputs(model, n=20, seed=6)
    limited = calibrate(model, feeds, CalibrationConfig(method="minmax", samples=5))
    assert limited.samples == 5
    assert limited["input"].max == feeds["input"][:5].max()


def test_config_must_be_a_calibration_config() -> None:
    with pytest.raises(ConfigError, match="'config' must be a CalibrationConfig"):
        calibrate(_log_model(), np.ones((2, 2), np.float32), {"method": "minmax"})  # type: ignore[arg-type]


def test_memory_does_not_grow_with_the_number_of_samples() -> None:
    prepared = normalize(models.conv_bn_relu())

    def stream(batches: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(0)
        for _ in range(batches):
            yield rng.standard_normal((16, 3, 8, 8)).astype(np.float32)

    def peak(batches: int) -> int:
        tracemalloc.start()
        config = CalibrationConfig(method="entropy")
        calibrate(prepared, stream(batches), config, normalized=True)
        _, highest = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return highest

    # numpy reports its allocations to tracemalloc: a kept batch would show as growth.
    assert peak(64) < peak(4) * 1.15


def test_a_torch_exported_model_calibrates() -> None:
    torch = pytest.importorskip("torch")
    model = models.torch_export(models.torch_small_cnn(), torch.zeros(1, 3, 8, 8), keep_bn=True)
    feeds = models.random_inputs(model, n=10, seed=7)
    ranges = calibrate(model, feeds, CalibrationConfig(method="entropy", batch_size=4))
    assert len(ranges) >= 8
    for name, chosen in ranges.items():
        assert chosen.observed_min <= chosen.min <= chosen.max <= chosen.observed_max, name


def test_identical_samples_are_refused_as_calibration_data() -> None:
    """Issue 14 (d8): ranges of one repeated input describe nothing else."""
    model = models.conv_bn_relu()
    one = models.random_inputs(model, n=1, seed=2)["input"]
    constant = np.repeat(one, 40, axis=0)
    with pytest.raises(DataError, match=r"all 40 calibration samples .* are identical"):
        calibrate(model, constant, CalibrationConfig(batch_size=16))
    varied = constant.copy()
    varied[37] += 0.5  # one differing sample, in the last batch, is variation
    assert calibrate(model, varied, CalibrationConfig(batch_size=16)).samples == 40
    assert calibrate(model, one, CalibrationConfig()).samples == 1  # one sample is not refused
