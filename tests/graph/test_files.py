"""load_model and save_model: files, external data, errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.errors import ModelError
from eightbit.graph import _skeleton, files, load_model, save_model
from tests.fixtures.models import conv_bn_relu, random_inputs, run_onnxruntime
from tests.graph.helpers import assert_same_outputs, serialized


def _save_with_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` as onnx itself does (all weights in ``weights.bin``)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save_model(
        copy, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0
    )


def _one_line_error(excinfo: pytest.ExceptionInfo[ModelError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_load_from_path_equals_the_file(tmp_path: Path) -> None:
    model = conv_bn_relu()
    path = tmp_path / "model.onnx"
    onnx.save_model(model, str(path))
    assert serialized(load_model(path)) == serialized(model)
    assert serialized(load_model(str(path))) == serialized(model)


def test_load_from_proto_returns_an_independent_copy() -> None:
    model = conv_bn_relu()
    before = serialized(model)
    loaded = load_model(model)
    assert loaded is not model
    loaded.graph.node[0].name = "changed"
    assert serialized(model) == before


def test_external_data_is_read_relative_to_the_model_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = conv_bn_relu()
    folder = tmp_path / "stored"
    folder.mkdir()
    _save_with_external_data(model, folder / "model.onnx")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    loaded = load_model(folder / "model.onnx")

    for tensor in loaded.graph.initializer:
        assert tensor.data_location == TensorProto.DEFAULT and tensor.HasField("raw_data")
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for tensor in loaded.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), original[tensor.name])
    assert_same_outputs(model, loaded)


def test_missing_external_data_file_is_named(tmp_path: Path) -> None:
    _save_with_external_data(conv_bn_relu(), tmp_path / "model.onnx")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelError, match=r"weights\.bin") as excinfo:
        load_model(tmp_path / "model.onnx")
    assert "copy the data file" in _one_line_error(excinfo)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist") as excinfo:
        load_model(tmp_path / "absent.onnx")
    assert "absent.onnx" in _one_line_error(excinfo)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a file"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "content", [b"this is a text file, not a model\n", b"\xff" * 64, b""], ids=str
)
def test_malformed_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="not an ONNX model") as excinfo:
        load_model(path)
    assert "bad.onnx" in _one_line_error(excinfo)


def _dangling_input_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"], name="relu")],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_checker_failure_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    onnx.save_model(_dangling_input_model(), str(path))
    with pytest.raises(ModelError, match="fails the ONNX checker") as excinfo:
        load_model(path)
    assert "nowhere" in _one_line_error(excinfo)
    with pytest.raises(ModelError, match="fails the ONNX checker"):
        load_model(_dangling_input_model())


def test_check_false_skips_the_checker() -> None:
    loaded = load_model(_dangling_input_model(), check=False)
    assert loaded.graph.node[0].input[0] == "nowhere"


def test_checker_runs_on_the_weightless_skeleton(monkeypatch: pytest.MonkeyPatch) -> None:
    # With every initializer detached the check still passes for a valid model and
    # still fails for a broken one: what models past 2 GiB go through.
    monkeypatch.setattr(_skeleton, "PAYLOAD_MIN_BYTES", 0)
    load_model(conv_bn_relu())
    with pytest.raises(ModelError, match="fails the ONNX checker"):
        load_model(_dangling_input_model())


def test_proto_with_unloaded_external_data_is_refused(tmp_path: Path) -> None:
    _save_with_external_data(conv_bn_relu(), tmp_path / "model.onnx")
    shell = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    with pytest.raises(ModelError, match="not loaded") as excinfo:
        load_model(shell)
    _one_line_error(excinfo)


def test_unsupported_source_type() -> None:
    with pytest.raises(ModelError, match="got int"):
        load_model(42)  # type: ignore[arg-type]


def test_save_writes_one_file_atomically(tmp_path: Path) -> None:
    model = conv_bn_relu()
    path = tmp_path / "out.onnx"
    path.write_bytes(b"old content")
    save_model(model, path)
    assert path.read_bytes() == model.SerializeToString()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_failed_save_leaves_the_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.onnx"
    path.write_bytes(b"old content")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files, "_write_weights", fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(conv_bn_relu(), path, external_data=True)
    assert path.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_external_data_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "EXTERNAL_MIN_BYTES", 16)  # the fixture's weights are tiny
    model = conv_bn_relu()
    before = serialized(model)
    path = tmp_path / "model.onnx"

    save_model(model, path, external_data=True)

    assert serialized(model) == before  # the caller's model keeps its weights
    data = tmp_path / "model.onnx.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    shell = onnx.load(str(path), load_external_data=False)
    external = [t for t in shell.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert len(external) == len(model.graph.initializer)
    for tensor in external:
        info = onnx.external_data_helper.ExternalDataInfo(tensor)
        assert info.location == data.name
        assert info.offset is not None and info.offset % files.DATA_ALIGNMENT == 0
    payload = sum(len(t.raw_data) for t in model.graph.initializer)
    assert payload <= data.stat().st_size < payload + files.DATA_ALIGNMENT * len(external)
    reloaded = load_model(path)
    assert serialized(reloaded) == before
    feeds = random_inputs(model)
    np.testing.assert_array_equal(
        run_onnxruntime(model, feeds)[0], run_onnxruntime(reloaded, feeds)[0]
    )


def test_external_data_is_chosen_for_large_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "EXTERNAL_DATA_THRESHOLD", 100)
    save_model(conv_bn_relu(), tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").is_file()
    save_model(conv_bn_relu(), tmp_path / "forced.onnx", external_data=False)
    assert not (tmp_path / "forced.onnx.data").exists()


def test_single_file_over_the_protobuf_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "PROTOBUF_LIMIT", 100)
    with pytest.raises(ModelError, match="external_data=True"):
        save_model(conv_bn_relu(), tmp_path / "x.onnx", external_data=False)
    assert not list(tmp_path.iterdir())


def test_typed_field_tensors_go_to_external_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tensors stored in float_data (not raw_data) are written little-endian too.
    monkeypatch.setattr(files, "EXTERNAL_MIN_BYTES", 16)
    model = conv_bn_relu()
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight)
    weight.ClearField("raw_data")
    weight.float_data.extend(values.ravel().tolist())
    save_model(model, tmp_path / "m.onnx", external_data=True)
    reloaded = load_model(tmp_path / "m.onnx")
    np.testing.assert_array_equal(numpy_helper.to_array(reloaded.graph.initializer[0]), values)
