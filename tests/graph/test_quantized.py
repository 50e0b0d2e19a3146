"""A quantized model given to quantize (or to the calibrate API) is refused in one line; a
float model whose weights are stored as int8 behind a DequantizeLinear is not
(graph.quantized)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.calibrate import calibrate
from eightbit.distributed.calibration import calibrate_on_ray
from eightbit.errors import ModelError
from eightbit.graph.quantized import quantized_nodes
from eightbit.pipeline import quantize
from tests.fixtures import models


def test_an_int8_model_given_to_quantize_is_refused_naming_its_nodes() -> None:
    model = models.conv_bn_relu()
    data = models.random_inputs(model, n=24, seed=3)
    int8 = quantize(model, data, improve="fast").model
    assert quantized_nodes(int8)["QuantizeLinear"] > 0
    with pytest.raises(ModelError, match=r"the model is quantized already \(\d+ QuantizeLinear"):
        quantize(int8, data, improve="fast")


def test_the_calibrate_api_refuses_an_int8_model_as_the_cli_does() -> None:
    model = models.conv_bn_relu()
    data = models.random_inputs(model, n=24, seed=3)
    int8 = quantize(model, data, improve="fast").model
    with pytest.raises(ModelError, match=r"the model is quantized already"):
        calibrate(int8, data)
    # Its cluster form too, before it joins any cluster.
    with pytest.raises(ModelError, match=r"the model is quantized already"):
        calibrate_on_ray(int8, data, ray="local")
    assert calibrate(model, data).tensors  # a float model still calibrates


def test_a_float_model_with_int8_stored_weights_is_quantized() -> None:
    model = models.conv_bn_relu()
    graph = model.graph
    weight = next(t for t in graph.initializer if t.name == "conv.weight")
    values = numpy_helper.to_array(weight)
    scale = np.float32(np.abs(values).max() / 127)
    stored = np.round(values / scale).astype(np.int8)
    graph.initializer.remove(weight)
    graph.initializer.extend(
        [
            numpy_helper.from_array(stored, "conv.weight_int8"),
            numpy_helper.from_array(np.array(scale, np.float32), "conv.weight_scale"),
        ]
    )
    graph.node.insert(
        0,
        helper.make_node(
            "DequantizeLinear", ["conv.weight_int8", "conv.weight_scale"], ["conv.weight"]
        ),
    )
    assert not quantized_nodes(model)
    result = quantize(model, models.random_inputs(model, n=24, seed=3), improve="fast")
    assert result.plan.decision("conv").quantized
    assert TensorProto.INT8 in {t.data_type for t in result.model.graph.initializer}
