"""Parameter bytes float vs int8: hand-computed per layer, numpy-counted in total."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from eightbit.analysis import memory_usage
from eightbit.graph import Graph, save_model
from tests.analysis.helpers import classifier, images, quantize


def initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(numpy_helper.to_array(tensor).nbytes for tensor in model.graph.initializer)


def test_per_layer_and_total_bytes(tmp_path: Path) -> None:
    quantized = quantize(classifier(), images(32))
    float_path, int8_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    save_model(quantized.float_model, float_path)
    save_model(quantized.qdq, int8_path)
    usage = memory_usage(
        Graph(quantized.float_model),
        Graph(quantized.qdq),
        float_path=float_path,
        int8_path=int8_path,
    )
    layers = {layer.node: layer for layer in usage.layers}
    assert set(layers) == {"conv1", "conv2", "fc"}
    conv1 = layers["conv1"]
    # w1: 8·3·3·3 = 216 weights: 864 float bytes; int8: 216 + 8 float32 scales + 8 int8 zero
    # points = 256. b1: 8 biases: 32 float bytes; int32: 32 + 8 scales (32) + 8 int32 zero
    # points (32) = 96.
    assert (conv1.float_bytes, conv1.int8_bytes) == (864 + 32, 256 + 96)
    fc = layers["fc"]
    # fc_w 10·8 = 80 weights, per output channel (10): 320 -> 80 + 40 + 10; fc_b: 40 -> 120.
    assert (fc.float_bytes, fc.int8_bytes) == (320 + 40, 130 + 120)
    assert usage.float_bytes == initializer_bytes(quantized.float_model)
    assert usage.int8_bytes == initializer_bytes(quantized.qdq)
    assert usage.saved_percent == pytest.approx(100 * (1 - usage.int8_bytes / usage.float_bytes))
    assert usage.float_file_bytes == float_path.stat().st_size
    assert usage.int8_file_bytes == int8_path.stat().st_size
