"""Memory of big models (issue 20): the same numbers as before, fewer copies on the way.

Each change that removes a copy must leave every result as it was; these tests force the
big-model paths on small models (thresholds lowered) and compare with the small-model ones.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from eightbit.analysis import quick_check as quick_check_module
from eightbit.graph import session as session_module
from eightbit.graph import with_outputs
from eightbit.graph.files import load_model, save_model
from eightbit.graph.session import exposing_session, make_session
from eightbit.improve.weights import bias_shifts as shifts_module
from eightbit.pipeline import quantize
from eightbit.quant import QuantConfig, QuantParams, dequantize_values, quantize_values
from eightbit.quant import values as values_module
from eightbit.quant.choose import weight_params
from tests.fixtures import models


def _opened_from(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What each InferenceSession was built from (bytes or a path), in order."""
    sources: list[object] = []
    real = ort.InferenceSession

    def spy(source: object, *args: object, **kwargs: object) -> ort.InferenceSession:
        sources.append(source)
        return real(source, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(session_module.ort, "InferenceSession", spy)
    return sources


def test_a_large_model_reaches_onnxruntime_as_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    model = models.conv_bn_relu()
    sources = _opened_from(monkeypatch)
    make_session(model)
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)
    make_session(model)
    assert isinstance(sources[0], bytes) and isinstance(sources[1], str)


def test_exposing_session_returns_what_with_outputs_does_without_copying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = models.conv_bn_relu()
    feeds = models.random_inputs(model)
    inner = [node.output[0] for node in model.graph.node]
    expected = make_session(with_outputs(model, inner)).run(inner, feeds)
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)

    def no_copy(*args: object) -> None:
        raise AssertionError("a large model must not be copied to expose its tensors")

    monkeypatch.setattr(session_module, "with_outputs", no_copy)
    before = model.SerializeToString()
    got = exposing_session(model, inner, lean=True).run(inner, feeds)
    for mine, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert model.SerializeToString() == before  # the caller's model is left as it was


@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32"])
def test_quantizing_in_slices_gives_the_same_integers(
    monkeypatch: pytest.MonkeyPatch, axis: int | None, dtype: str
) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, 5, 3)) * 4).astype(np.float32)
    channels = 1 if axis is None else x.shape[axis]
    scale = rng.uniform(0.01, 0.1, channels).astype(np.float32)
    zero = rng.integers(-3, 4, channels) if dtype != "uint8" else rng.integers(100, 130, channels)
    if axis is None:
        scale, zero = scale[0], zero[0]
    params = QuantParams(scale, zero, dtype, axis)
    whole_q = quantize_values(x, params)
    whole_dq = dequantize_values(whole_q, params)
    monkeypatch.setattr(values_module, "ROW_CHUNK_ELEMENTS", 7)  # 1 row of 15 at a time
    sliced_q = quantize_values(x, params)
    sliced_dq = dequantize_values(sliced_q, params)
    assert sliced_q.dtype == whole_q.dtype and sliced_dq.dtype == whole_dq.dtype
    np.testing.assert_array_equal(sliced_q, whole_q)
    np.testing.assert_array_equal(sliced_dq, whole_dq)


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_weight_scales_are_those_of_the_float64_formula(axis: int | None) -> None:
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((6, 4, 3)) * 3).astype(np.float32)
    w[2] = 0.0  # a channel of zeros takes the per-tensor scale
    wide = np.abs(w.astype(np.float64))
    if axis is None:
        channel_max = np.asarray(wide.max())
    else:
        others = tuple(i for i in range(3) if i != axis)
        channel_max = wide.max(axis=others)
        channel_max = np.where(channel_max > 0, channel_max, wide.max())
    expected = np.maximum(channel_max / 127, 1e-12).astype(np.float32)
    got = weight_params(w, axis, QuantConfig()).scale
    np.testing.assert_array_equal(got, expected.reshape(got.shape))


def test_weight_params_still_refuse_nan() -> None:
    w = np.ones((3, 2), np.float32)
    w[1, 1] = np.nan
    with pytest.raises(Exception, match="NaN or infinite"):
        weight_params(w, 0, QuantConfig())


def test_bias_shifts_in_one_session_per_layer_equal_one_session_for_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = models.conv_bn_relu()
    data = models.random_inputs(model, n=8)
    together = quantize(model, data, improve="default", check_samples=0)
    monkeypatch.setattr(shifts_module, "SHIFT_SESSION_BYTES", 0)
    apart = quantize(model, data, improve="default", check_samples=0)
    assert apart.model.SerializeToString() == together.model.SerializeToString()


def test_the_quick_check_holds_one_session_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    alive: list[weakref.ref[ort.InferenceSession]] = []
    most = [0]
    real = quick_check_module.make_session

    def counted(*args: object, **kwargs: object) -> ort.InferenceSession:
        gc.collect()
        live = sum(ref() is not None for ref in alive)
        most[0] = max(most[0], live + 1)
        session = real(*args, **kwargs)  # type: ignore[arg-type]
        alive.append(weakref.ref(session))
        return session

    monkeypatch.setattr(quick_check_module, "make_session", counted)
    model = models.conv_bn_relu()
    data = models.random_inputs(model, n=8)
    result = quantize(model, data, improve="fast", check_samples=4)
    assert result.check is not None and result.check.samples == 4
    assert most[0] == 1


def test_a_quantized_model_over_the_threshold_is_saved_with_its_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eightbit.graph import files

    model = models.conv_bn_relu()
    source = tmp_path / "float.onnx"
    save_model(model, source, external_data=True)  # the input in external data too
    data = models.random_inputs(model, n=8)
    single = quantize(source, data, improve="fast", check_samples=0)
    single.save(tmp_path / "single.onnx")
    assert not (tmp_path / "single.onnx.data").exists()
    monkeypatch.setattr(files, "EXTERNAL_DATA_THRESHOLD", 1)
    split = quantize(source, data, improve="fast", check_samples=0)
    split.save(tmp_path / "split.onnx")
    assert (tmp_path / "split.onnx.data").exists()
    loaded = load_model(tmp_path / "split.onnx")
    assert loaded.SerializeToString() == onnx.load(tmp_path / "single.onnx").SerializeToString()


def test_the_size_of_a_model_past_2_gib_is_counted_from_its_parts() -> None:
    from eightbit.graph.files import PROTOBUF_LIMIT, byte_size

    # Shapes say 3 x 1 GiB; the payloads are not there (protobuf would refuse to count):
    # the size comes from the shapes.
    parts = []
    for i in range(3):
        part = onnx.TensorProto(name=f"w{i}", data_type=onnx.TensorProto.FLOAT, dims=[2**28])
        part.raw_data = b"x"
        parts.append(part)
    graph = onnx.helper.make_graph([], "big", [], [], parts)
    assert 3 * 2**30 < byte_size(onnx.helper.make_model(graph)) < 3 * 2**30 + 1000
    assert PROTOBUF_LIMIT < 3 * 2**30


def test_the_size_of_a_large_model_is_its_serialized_size_to_a_few_bytes() -> None:
    from eightbit.graph.files import byte_size

    weight = onnx.numpy_helper.from_array(np.ones((1200, 4096), np.float32), "weight_of_a_gemm")
    small = models.conv_bn_relu()
    big = onnx.ModelProto()
    big.CopyFrom(small)
    big.graph.initializer.append(weight)
    assert abs(byte_size(big) - big.ByteSize()) < 64
    assert byte_size(small) == small.ByteSize()


def test_a_large_model_opens_inside_an_all_or_nothing_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eightbit._io import all_or_nothing

    # The CLI writes its outputs all or nothing: renames wait for the end of the command.
    # A session's temporary file must be readable at once all the same.
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)
    model = models.conv_bn_relu()
    feeds = models.random_inputs(model)
    inner = [model.graph.node[0].output[0]]
    with all_or_nothing():
        make_session(model).run(None, feeds)
        exposing_session(model, inner).run(inner, feeds)
