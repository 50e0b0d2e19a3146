"""``float_nodes_in_ort``: the nodes ONNX Runtime runs outside its int8 kernels."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import eightbit
from eightbit.analysis.ort_kernels import float_nodes_in_ort
from eightbit.quant import QuantConfig
from tests.analysis.ort_check import assert_int8_kernels_only
from tests.export.helpers import make_model, normal
from tests.fixtures.models import conv_bn_relu, random_inputs


def _quantize(model, seed: int = 0):
    feeds = random_inputs(model, n=16, seed=seed)
    (data,) = feeds.values()
    return eightbit.quantize(model, data, QuantConfig(), check_samples=0, improve="fast").model


def _conv_then(op_type: str):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv"),
        helper.make_node(op_type, ["a"], ["b"], name="act"),
        helper.make_node("Conv", ["b", "w2"], ["y"], name="conv2"),
    ]
    arrays = {"w": normal(4, 3, 3, 3), "w2": normal(4, 4, 1, 1, seed=1)}
    return make_model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4, 6, 6])], arrays, opset=14)


def test_an_all_int8_model_has_no_float_node():
    assert float_nodes_in_ort(_quantize(conv_bn_relu(dynamic_batch=False))) == []


def test_a_float_op_between_dq_and_q_is_listed():
    # ONNX Runtime has no int8 CPU kernel for HardSwish (docs/numerics.md §Q10).
    # ONNX Runtime may also decompose it into HardSigmoid and Mul (names it leaves empty).
    found = float_nodes_in_ort(_quantize(_conv_then("HardSwish")))
    assert found and {node.op_type for node in found} <= {"HardSwish", "HardSigmoid", "Mul"}
    assert all(node.between_dq_and_q and node.name for node in found)
    assert "between DequantizeLinear and QuantizeLinear" in str(found[0])


@pytest.mark.parametrize("optimization", ["all", "basic"])
def test_a_float_model_lists_every_compute_node(optimization):
    model = _conv_then("Relu")
    names = [n.op_type for n in float_nodes_in_ort(model, optimization=optimization)]
    assert names.count("Conv") + names.count("FusedConv") == 2
    assert not any(node.between_dq_and_q for node in float_nodes_in_ort(model))


def test_an_unfused_requantization_is_listed():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q1"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dq"),
        helper.make_node("QuantizeLinear", ["d", "s2", "z"], ["q2"], name="q2"),
        helper.make_node("DequantizeLinear", ["q2", "s2", "z"], ["y"], name="dq2"),
    ]
    arrays = {"s": np.float32(0.1), "s2": np.float32(0.2), "z": np.uint8(128)}
    model = make_model(nodes, [("x", [4])], [("y", [4])], arrays)
    # ONNX Runtime folds this pair itself at "basic"; unoptimized, it stays.
    assert float_nodes_in_ort(model, optimization="basic") == []
    found = float_nodes_in_ort(model, optimization="none")
    assert [(f.name, f.op_type) for f in found] == [("dq", "DequantizeLinear")]


def test_the_helper_names_the_float_nodes_and_accepts_allowed_ones():
    int8 = _quantize(_conv_then("HardSwish"))
    with pytest.raises(AssertionError, match="ONNX Runtime runs these in float: Hard"):
        assert_int8_kernels_only(int8)
    assert_int8_kernels_only(int8, allowed={"HardSwish", "HardSigmoid", "Mul"})
