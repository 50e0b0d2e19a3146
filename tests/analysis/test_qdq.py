"""Reading any QDQ model: eightbit's, and ONNX Runtime's quantizer's; mismatched model pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from eightbit.analysis import RunOptions, load_pair, validate
from eightbit.errors import ModelError
from eightbit.graph import save_model
from eightbit.plan import plan_path_for
from tests.analysis.helpers import classifier, images, quantize


def test_parameters_are_read_from_the_graph_as_planned() -> None:
    quantized = quantize(classifier(), images(32))
    pair = load_pair(classifier(), quantized.qdq)
    planned = {
        name: params
        for name, params in quantized.plan.tensors.items()
        if name not in {t.name for t in quantized.float_model.graph.initializer}
    }
    assert {a.name: a.params for a in pair.qdq.activations} == planned
    for weight in pair.qdq.weights:
        assert weight.float_name is not None
        planned_weight = quantized.plan.tensors[weight.float_name]
        # A QDQ graph cannot say that weights avoid -128 (narrow range); the rest it says.
        assert (weight.params.dtype, weight.params.axis) == (
            planned_weight.dtype,
            planned_weight.axis,
        )
        np.testing.assert_array_equal(weight.params.scale, planned_weight.scale)
        np.testing.assert_array_equal(weight.params.zero_point, planned_weight.zero_point)
    assert pair.plan is None and not pair.qdq.unmatched and not pair.qdq.unsupported


def test_onnxruntime_quantizer_models_are_matched_by_quantize_input(tmp_path: Path) -> None:
    quantization = pytest.importorskip("onnxruntime.quantization")

    class Reader(quantization.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter([{"input": images(8, seed=i)} for i in range(2)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    source, target = tmp_path / "float.onnx", tmp_path / "ort_int8.onnx"
    onnx.save(classifier(), source)
    quantization.quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
    )
    pair = load_pair(source, target)
    names = {activation.name for activation in pair.qdq.activations}
    assert {"input", "logits"} <= names
    assert all(a.int8_name != a.name for a in pair.qdq.activations if a.name != "logits")
    assert {w.float_name for w in pair.qdq.weights if w.params.dtype == "int8"} == {
        "w1",
        "w2",
        "fc_w",
    }
    result = validate(source, target, {"input": images(16, seed=9)}, options=RunOptions())
    assert result.outputs[0].sqnr_db > 20
    assert result.layers is not None and len(result.layers.activations) == len(names)


def test_models_with_different_outputs_are_refused() -> None:
    other = quantize(classifier(seed=3, classes=4), images(32))
    with pytest.raises(ModelError, match=r"output 'logits' is .*\[batch, 10\].*\[batch, 4\]"):
        load_pair(classifier(), other.qdq)


def test_models_with_different_inputs_are_refused() -> None:
    quantized = quantize(classifier(), images(32))
    renamed = onnx.ModelProto()
    renamed.CopyFrom(quantized.qdq)
    renamed.graph.input[0].name = "pixels"
    for node in renamed.graph.node:
        for index, name in enumerate(node.input):
            if name == "input":
                node.input[index] = "pixels"
    with pytest.raises(ModelError, match=r"float model's inputs are \[input .*\] but the int8"):
        load_pair(classifier(), renamed)


def test_a_float_model_is_not_an_int8_model() -> None:
    with pytest.raises(ModelError, match="no QuantizeLinear/DequantizeLinear"):
        load_pair(classifier(), classifier())


def test_plan_path_for_the_int8_file_is_found(tmp_path: Path) -> None:
    quantized = quantize(classifier(), images(32))
    path = tmp_path / "model_int8.onnx"
    save_model(quantized.qdq, path)
    assert plan_path_for(path) == tmp_path / "model_int8.plan.json"
    assert load_pair(classifier(), path).plan is None
    quantized.plan.save(plan_path_for(path))
    pair = load_pair(classifier(), path)
    assert pair.plan is not None and pair.plan.nodes == quantized.plan.nodes
