"""make_session and with_outputs: running models and their inner tensors with ONNX Runtime."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eightbit.errors import ConfigError, ModelError
from eightbit.graph import Graph, make_session, normalize, save_model, session, with_outputs
from tests.fixtures import models
from tests.graph.helpers import serialized


def test_every_float_activation_comes_out() -> None:
    model = normalize(models.conv_bn_relu())
    before = serialized(model)
    names = Graph(model).float_activations()
    exposed = with_outputs(model, names)
    assert serialized(model) == before

    run = make_session(exposed, threads=1, optimization="none")
    feeds = models.random_inputs(model)
    values = dict(zip([o.name for o in run.get_outputs()], run.run(None, feeds), strict=True))

    assert list(values) == ["logits", *[n for n in names if n != "logits"]]
    np.testing.assert_array_equal(values["logits"], models.run_onnxruntime(model, feeds)[0])
    np.testing.assert_array_equal(values["input"], feeds["input"])
    np.testing.assert_array_equal(values["relu_out"], np.maximum(values["bn_out"], 0))
    np.testing.assert_allclose(
        values["pool_out"], values["relu_out"].mean(axis=(2, 3), keepdims=True), rtol=1e-6
    )
    np.testing.assert_array_equal(values["flat"], values["pool_out"].reshape(4, 4))


def test_new_outputs_carry_types_and_shapes() -> None:
    model = normalize(models.int32_input())
    exposed = with_outputs(model, ["summed", "ids", "embedding", "summed"])
    outputs = {value.name: value for value in exposed.graph.output}
    assert list(outputs) == ["output", "summed", "ids", "embedding"]
    summed = outputs["summed"].type.tensor_type
    assert summed.elem_type == TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in summed.shape.dim] == ["batch", 6, 4]
    assert outputs["ids"].type.tensor_type.elem_type == TensorProto.INT32
    feeds = models.random_inputs(model)
    ids, embedding = make_session(exposed).run(["ids", "embedding"], feeds)
    np.testing.assert_array_equal(ids, feeds["ids"])
    assert embedding.shape == (models.VOCABULARY, 4)


def test_types_are_inferred_when_the_model_does_not_record_them() -> None:
    model = models.constant_subgraph()  # not normalized: no value_info
    exposed = with_outputs(model, ["mm", "w"])
    by_name = {value.name: value for value in exposed.graph.output}
    assert by_name["mm"].type.tensor_type.elem_type == TensorProto.FLOAT
    feeds = models.random_inputs(model)
    mm, w = make_session(exposed).run(["mm", "w"], feeds)
    np.testing.assert_allclose(mm, feeds["x"] @ w, rtol=1e-6)


def test_unknown_tensor_names_are_refused_with_a_suggestion() -> None:
    with pytest.raises(ModelError, match=r"no tensor named 'relu_ou'.*'relu_out'"):
        with_outputs(normalize(models.conv_bn_relu()), ["relu_ou"])


def test_session_options() -> None:
    run = make_session(models.two_inputs(), threads=2, optimization="basic")
    options = run.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert run.get_providers() == ["CPUExecutionProvider"]
    import onnxruntime as ort

    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_optimized_model_is_written_where_asked(tmp_path: Path) -> None:
    target = tmp_path / "optimized.onnx"
    make_session(normalize(models.conv_bn_relu()), optimized_model_path=target)
    optimized = onnx.load(str(target))
    assert optimized.graph.node  # ORT wrote its graph; tests of other packages read it


@pytest.mark.parametrize(
    ("options", "message"),
    [({"threads": 0}, "'threads'"), ({"optimization": "fast"}, "'optimization' must be one of")],
)
def test_invalid_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_session(models.two_inputs(), **options)  # type: ignore[arg-type]


def test_session_from_a_file_with_external_data(tmp_path: Path) -> None:
    model = models.conv_bn_relu()
    path = tmp_path / "model.onnx"
    save_model(model, path, external_data=True)
    feeds = models.random_inputs(model)
    result = make_session(path, threads=1, optimization="none").run(None, feeds)[0]
    np.testing.assert_array_equal(result, models.run_onnxruntime(model, feeds)[0])


def test_missing_file_and_unloadable_model() -> None:
    with pytest.raises(ModelError, match="does not exist"):
        make_session("no/such/model.onnx")
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="example.com")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("example.com", 1)]
    )
    with pytest.raises(ModelError, match="ONNX Runtime cannot load the model") as excinfo:
        make_session(model)
    assert "\n" not in str(excinfo.value)


def test_large_models_go_through_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "SESSION_FILE_BYTES", 0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = models.conv_bn_relu()
    feeds = models.random_inputs(model)
    result = make_session(model, threads=1, optimization="none").run(None, feeds)[0]
    np.testing.assert_array_equal(result, models.run_onnxruntime(model, feeds)[0])
    assert list(tmp_path.iterdir()) == []  # the temporary copy is gone
