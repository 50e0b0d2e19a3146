"""Fewer copies of a big model's weights (issue 20), with every result as it was.

Each test forces the path a big model takes on a small one and compares it with the path
that copies, or checks that the copy is gone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import eightbit.pipeline as pipeline_module
from eightbit.export import qdq as qdq_module
from eightbit.export import to_qdq
from eightbit.graph import files as files_module
from eightbit.graph import normalize
from eightbit.graph import session as session_module
from eightbit.graph.session import make_session, session_with_arrays
from eightbit.improve import measure as measure_module
from eightbit.improve._onnx import comparison_model
from eightbit.improve.measure import compare
from eightbit.improve.weights import bias_shifts as shifts_module
from eightbit.pipeline import quantize
from eightbit.pipeline.state import State
from eightbit.quant import QuantConfig
from tests.fixtures import models

WIDTH = 16  # a 16 x 16 float weight: 1 KiB, the smallest one that is stubbed


def shared_weight_model() -> onnx.ModelProto:
    """x -> MatMul(W) -> Relu -> MatMul(W): one weight read by two layers."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((WIDTH, WIDTH)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="first"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w"], ["y"], name="second"),
    ]
    graph = helper.make_graph(
        nodes,
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", WIDTH])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _copying_to_qdq(model: onnx.ModelProto, plan: object) -> onnx.ModelProto:
    """``to_qdq`` as it was: the whole model copied, then rewritten."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    qdq_module._QdqWriter(result.graph, plan).write()  # type: ignore[arg-type]
    return result


@pytest.mark.parametrize(
    ("make", "exclude"),
    [(models.conv_bn_relu, ()), (shared_weight_model, ("second",)), (shared_weight_model, ())],
)
def test_to_qdq_without_copying_the_weights_writes_the_same_model(
    make: object, exclude: tuple[str, ...]
) -> None:
    model = make()  # type: ignore[operator]
    data = models.random_inputs(model, n=8)
    result = quantize(model, data, QuantConfig(exclude=exclude), improve="fast", check_samples=0)
    prepared = normalize(model)
    before = prepared.SerializeToString()
    written = to_qdq(prepared, result.plan)
    assert written.SerializeToString() == _copying_to_qdq(prepared, result.plan).SerializeToString()
    assert prepared.SerializeToString() == before  # the float model is left as it was
    if exclude:  # the float layer still reads the float weight, data and all
        kept = {t.name: t for t in written.graph.initializer}["w"]
        np.testing.assert_array_equal(numpy_helper.to_array(kept), numpy_helper.to_array(
            prepared.graph.initializer[0]))  # fmt: skip


def test_to_qdq_does_not_copy_a_weight_it_stores_as_integers() -> None:
    model = shared_weight_model()
    data = models.random_inputs(model, n=8)
    plan = quantize(model, data, improve="fast", check_samples=0).plan
    copy, weights = qdq_module._copy_without_weights(normalize(model), plan)
    stub = {t.name: t for t in copy.graph.initializer}["w"]
    assert list(weights) == ["w"]
    assert not stub.raw_data and not stub.float_data and list(stub.dims) == [WIDTH, WIDTH]


def test_a_big_comparison_shares_the_weights_of_its_two_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = normalize(models.conv_bn_relu())
    data = models.random_inputs(model, n=8)
    plan = quantize(model, data, improve="fast", check_samples=0).plan
    quantized = to_qdq(model, plan)
    batches = [data]
    layers = {node.name: node.output[0] for node in model.graph.node}
    means = [model.graph.input[0].name]
    rank = len(model.graph.output[0].type.tensor_type.shape.dim)
    small = compare(model, quantized, batches, layers, means, output_rank=rank)
    shared: list[dict[str, TensorProto]] = []
    real = measure_module.make_session

    def spy(merged: onnx.ModelProto, **kwargs: object) -> object:
        weights = kwargs.get("weights") or {}
        shared.append(weights)  # type: ignore[arg-type]
        stubs = [t for t in merged.graph.initializer if t.name in weights]
        assert stubs and all(not t.raw_data for t in stubs)  # no data copied in
        return real(merged, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(measure_module, "make_session", spy)
    monkeypatch.setattr(session_module, "SESSION_FILE_BYTES", 0)
    monkeypatch.setattr(files_module, "EXTERNAL_MIN_BYTES", 100)  # the weights are "big"
    big = compare(model, quantized, batches, layers, means, output_rank=rank)
    assert shared and shared[0]
    assert big.layers == small.layers and big.output_db == small.output_db
    for name in small.means:
        np.testing.assert_array_equal(big.means[name], small.means[name])
    assert big.output_shift is not None and small.output_shift is not None
    np.testing.assert_array_equal(big.output_shift, small.output_shift)


def test_quantize_normalizes_the_model_as_read_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (C.11) The model as read is given up to normalization, so the steps' float model is
    # that very object: a big model's weights are never held twice, even for a moment.
    seen: list[onnx.ModelProto] = []
    prepared: list[bool] = []
    real_start, real_steps = pipeline_module._start, pipeline_module.steps

    def start(model: onnx.ModelProto, *args: object, **kwargs: object) -> object:
        seen.append(model)
        return real_start(model, *args, **kwargs)  # type: ignore[arg-type]

    class Looking:
        def applies(self, settings: object) -> bool:
            return True

        def run(self, state: State) -> State:
            prepared.append(state.prepared is seen[0] and state.float_source is seen[0])
            return state

    monkeypatch.setattr(pipeline_module, "_start", start)
    monkeypatch.setattr(pipeline_module, "steps", lambda: (Looking(), *real_steps()))
    model = models.conv_bn_relu()
    quantize(model, models.random_inputs(model, n=8), improve="fast", check_samples=0)
    assert prepared == [True]
    assert "BatchNormalization" not in [n.op_type for n in seen[0].graph.node]  # folded


def test_a_session_reads_arrays_as_it_would_read_initializers() -> None:
    model = normalize(models.conv_bn_relu())
    feeds = models.random_inputs(model, n=4)
    big = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    arrays = {big.name: numpy_helper.to_array(big)}
    declared = onnx.ModelProto()
    declared.CopyFrom(model)
    kept = [t for t in declared.graph.initializer if t.name != big.name]
    del declared.graph.initializer[:]
    declared.graph.initializer.extend(kept)
    names = [output.name for output in model.graph.output]
    expected = make_session(model, optimization="none").run(names, feeds)
    got = session_with_arrays(declared, arrays, optimization="none").run(names, feeds)
    for mine, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_bias_correction_hands_its_weight_shifts_over_as_arrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed: list[list[str]] = []
    real = shifts_module.session_with_arrays

    def spy(model: onnx.ModelProto, arrays: dict[str, np.ndarray], **kwargs: object) -> object:
        assert not any(t.name in arrays for t in model.graph.initializer)  # not in the proto
        handed.append(list(arrays))
        return real(model, arrays, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shifts_module, "session_with_arrays", spy)
    model = models.conv_bn_relu()
    data = models.random_inputs(model, n=8)
    result = quantize(model, data, improve="default", check_samples=0)
    assert handed and all(name.startswith("delta_") for names in handed for name in names)
    assert any(step.name == "bias_correction" for step in result.plan.steps)


def test_the_comparison_measures_each_tensor_as_soon_as_both_models_made_it() -> None:
    model = normalize(models.opset12_model())
    data = models.random_inputs(model, n=8)
    plan = quantize(model, data, improve="fast", check_samples=0).plan
    quantized = to_qdq(model, plan)
    layers = {node.name: node.output[0] for node in model.graph.node}
    merged, _ = comparison_model(model, quantized, layers)
    known = {t.name for t in merged.graph.initializer} | {v.name for v in merged.graph.input}
    for node in merged.graph.node:  # still in topological order
        assert all(not name or name in known for name in node.input), node.name
        known.update(node.output)
    order = [node.name for node in merged.graph.node]
    first_measure = next(i for i, name in enumerate(order) if name.startswith("__eightbit"))
    last_of_models = max(i for i, name in enumerate(order) if not name.startswith("__eightbit"))
    assert first_measure < last_of_models  # not every tensor held until both models ran
    assert len(model.graph.node) >= 3


def test_a_big_model_is_saved_one_initializer_at_a_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # (C.11) Past STREAM_ABOVE a single-file model is never serialized whole (a string
    # the size of the int8 model beside it); the file holds the same bytes.
    model = normalize(models.if_branches())
    expected = model.SerializeToString()
    monkeypatch.setattr(files_module, "STREAM_ABOVE", 0)

    def whole(*args: object) -> None:
        raise AssertionError("the model was serialized whole")

    monkeypatch.setattr(files_module, "atomic_write_bytes", whole)
    files_module.save_model(model, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == expected
