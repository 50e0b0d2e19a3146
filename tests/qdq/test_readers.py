"""The engine and the analysis read a QDQ model through the one format module (§Q10.1)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from eightbit.analysis import load_pair
from eightbit.engine import execute
from eightbit.engine.build import build_program
from eightbit.errors import ModelError
from tests.analysis.helpers import Quantized, classifier, images, quantize
from tests.export.helpers import session


@pytest.fixture(scope="module")
def quantized() -> Quantized:
    return quantize(classifier(), images(32))


def _constant_dequantizers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    constants = {tensor.name for tensor in model.graph.initializer}
    return [
        n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants
    ]


def _without_constant_zero_points(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the zero points of its weights' and biases' DQs left out: they are all
    0, which ONNX reads as the zero of the stored integers' type (int8 and int32)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in _constant_dequantizers(copy):
        zero = next(t for t in copy.graph.initializer if t.name == node.input[2])
        assert not onnx.numpy_helper.to_array(zero).any()
        del node.input[2]
    return copy


def test_a_zero_point_left_out_is_read_as_onnx_runtime_runs_it(quantized: Quantized) -> None:
    bare = _without_constant_zero_points(quantized.qdq)
    feeds = {"input": images(4, seed=5)}
    np.testing.assert_array_equal(
        session(bare, optimized=False).run(None, feeds)[0],
        session(quantized.qdq, optimized=False).run(None, feeds)[0],
    )
    engine = [execute(build_program(m, quantized.plan), feeds) for m in (quantized.qdq, bare)]
    np.testing.assert_array_equal(engine[0]["logits"], engine[1]["logits"])
    weights = [load_pair(classifier(), m).qdq.weights for m in (quantized.qdq, bare)]
    assert [w.params for w in weights[0]] == [w.params for w in weights[1]]
    assert {w.params.dtype for w in weights[1]} == {"int8", "int32"}


def test_a_node_the_format_cannot_read_is_refused_by_the_engine_and_listed_by_the_analysis(
    quantized: Quantized,
) -> None:
    reshaped = onnx.ModelProto()
    reshaped.CopyFrom(quantized.qdq)
    node = _constant_dequantizers(reshaped)[0]  # w1: 8 channels
    for tensor in reshaped.graph.initializer:
        if tensor.name in node.input[1:]:
            values = onnx.numpy_helper.to_array(tensor).reshape(2, 4)
            tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    reason = r"its scale has shape \(2, 4\) and its zero point \(2, 4\); expected both"
    with pytest.raises(ModelError, match=f"DequantizeLinear '{node.name}': {reason}"):
        build_program(reshaped, quantized.plan)
    (unsupported,) = load_pair(classifier(), reshaped).qdq.unsupported
    assert unsupported[0] == node.name and re.match(reason, unsupported[1])
