"""The shared test models are valid, deterministic and fed correctly by random_inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from eightbit.graph import load_model
from tests.fixtures import models
from tests.graph.helpers import serialized

BUILDERS = models.ALL_BUILDERS


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_builders_are_valid_and_seeded(build: Callable[..., onnx.ModelProto]) -> None:
    model = build()
    onnx.checker.check_model(model, full_check=True)
    assert serialized(build()) == serialized(model)
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    if weights:
        other = {t.name: numpy_helper.to_array(t) for t in build(seed=1).graph.initializer}
        assert not np.array_equal(numpy_helper.to_array(weights[0]), other[weights[0].name])
    models.run_onnxruntime(model, models.random_inputs(model))


def test_random_inputs_respect_types_and_vocabulary() -> None:
    model = models.int32_input()
    feeds = models.random_inputs(model, n=7, seed=3)
    assert feeds["ids"].dtype == np.int32 and feeds["ids"].shape == (7, 6)
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < models.VOCABULARY
    assert len(np.unique(feeds["ids"])) > 1
    assert feeds["x"].dtype == np.float32 and feeds["x"].shape == (7, 6, 4)
    again = models.random_inputs(model, n=7, seed=3)
    np.testing.assert_array_equal(again["x"], feeds["x"])
    flags = models.random_inputs(models.if_branches())["flag"]
    assert flags.dtype == bool and flags.shape == ()


def test_opset_fixtures_carry_their_opset() -> None:
    for build, opset in ((models.opset11_model, 11), (models.opset12_model, 12)):
        assert build().opset_import[0].version == opset
    assert models.conv_bn_relu(opset=15).opset_import[0].version == 15
    static = models.conv_bn_relu(dynamic_batch=False).graph.input[0]
    assert static.type.tensor_type.shape.dim[0].dim_value == 1


def test_torch_export_with_external_data_loads_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    module = models.torch_small_cnn()
    path = models.torch_export(
        module, torch.randn(1, 3, 8, 8), tmp_path / "cnn.onnx", external_data=True
    )
    assert path == tmp_path / "cnn.onnx" and (tmp_path / "cnn.onnx.data").is_file()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = load_model(path)
    feeds = models.random_inputs(model, n=2)
    with torch.no_grad():
        expected = module(torch.from_numpy(feeds["input"])).numpy()
    np.testing.assert_allclose(
        models.run_onnxruntime(model, feeds)[0], expected, rtol=1e-5, atol=1e-5
    )
    fused = models.torch_export(module, torch.randn(1, 3, 8, 8), keep_bn=False, opset=13)
    assert "BatchNormalization" not in [n.op_type for n in fused.graph.node]
