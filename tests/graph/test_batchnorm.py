"""BatchNormalization folding into Conv, ConvTranspose, Gemm and MatMul, and when it must not."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import normalize
from tests.graph.helpers import assert_same_outputs

FLOAT = TensorProto.FLOAT


def _bn(rng: np.random.Generator, source: str, target: str, channels: int) -> tuple[Any, ...]:
    params = {
        "gamma": rng.uniform(0.3, 2.0, channels),
        "beta": rng.uniform(-1.0, 1.0, channels),
        "mean": rng.uniform(-1.0, 1.0, channels),
        "var": rng.uniform(0.05, 3.0, channels),
    }
    tensors = [numpy_helper.from_array(v.astype(np.float32), f"bn.{k}") for k, v in params.items()]
    node = helper.make_node(
        "BatchNormalization",
        [source, *(t.name for t in tensors)],
        [target],
        name="bn",
        epsilon=float(rng.uniform(1e-5, 1e-2)),
    )
    return node, tensors


def _linear_bn(kind: str, seed: int = 0) -> onnx.ModelProto:
    """``x → <kind> → BatchNormalization → y`` with random weights and statistics."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    x_shape: list[Any]
    if kind == "conv_grouped_no_bias":
        x_shape, channels = ["batch", 4, 5, 5], 6
        inits = [weight("w", 6, 2, 3, 3)]
        linear = helper.make_node("Conv", ["x", "w"], ["h"], name="linear", group=2)
    elif kind == "conv_transpose_grouped":
        x_shape, channels = ["batch", 4, 5, 5], 6
        inits = [weight("w", 4, 3, 3, 3), weight("b", 6)]
        linear = helper.make_node("ConvTranspose", ["x", "w", "b"], ["h"], name="linear", group=2)
    elif kind == "conv_transpose":
        x_shape, channels = ["batch", 3, 4, 4], 5
        inits = [weight("w", 3, 5, 2, 2)]
        linear = helper.make_node("ConvTranspose", ["x", "w"], ["h"], name="linear", strides=[2, 2])
    elif kind == "gemm_scaled":
        x_shape, channels = ["batch", 4], 5
        inits = [weight("w", 4, 5), weight("c", 5)]
        linear = helper.make_node(
            "Gemm", ["x", "w", "c"], ["h"], name="linear", alpha=0.7, beta=1.3
        )
    elif kind == "gemm_trans_b":
        x_shape, channels = ["batch", 4], 5
        inits = [weight("w", 5, 4)]
        linear = helper.make_node("Gemm", ["x", "w"], ["h"], name="linear", transB=1)
    elif kind == "gemm_row_bias":
        x_shape, channels = ["batch", 4], 5
        inits = [weight("w", 5, 4), weight("c", 1, 5)]
        linear = helper.make_node("Gemm", ["x", "w", "c"], ["h"], name="linear", transB=1)
    elif kind == "matmul":
        x_shape, channels = ["batch", 4], 5
        inits = [weight("w", 4, 5)]
        linear = helper.make_node("MatMul", ["x", "w"], ["h"], name="linear")
    else:
        raise ValueError(kind)
    bn, bn_params = _bn(rng, "h", "y", channels)
    graph = helper.make_graph(
        [linear, bn],
        kind,
        [helper.make_tensor_value_info("x", FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", FLOAT, None)],
        inits + bn_params,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _op_types(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


FOLDING_KINDS = [
    "conv_grouped_no_bias",
    "conv_transpose_grouped",
    "conv_transpose",
    "gemm_scaled",
    "gemm_trans_b",
    "gemm_row_bias",
]


@pytest.mark.parametrize("kind", FOLDING_KINDS)
def test_batchnorm_folds_into_its_producer(kind: str) -> None:
    model = _linear_bn(kind)
    normalized = normalize(model)
    assert _op_types(normalized) == [model.graph.node[0].op_type]
    assert normalized.graph.node[0].name == "linear"
    assert_same_outputs(model, normalized)


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(FOLDING_KINDS), seed=st.integers(0, 2**32 - 1))
def test_folding_keeps_outputs_for_any_statistics(kind: str, seed: int) -> None:
    model = _linear_bn(kind, seed)
    assert_same_outputs(model, normalize(model), rtol=2e-5)


def test_batchnorm_after_matmul_becomes_a_bias_add() -> None:
    model = _linear_bn("matmul")
    normalized = normalize(model)
    assert _op_types(normalized) == ["MatMul", "Add"]
    add = normalized.graph.node[1]
    assert add.name == "bn" and list(add.output) == ["y"]
    assert_same_outputs(model, normalized)


def test_batchnorm_after_a_3d_matmul_stays() -> None:
    # BN normalizes axis 1 (the sequence here), not the MatMul's output features.
    model = _linear_bn("matmul")
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", FLOAT, ["batch", 5, 4]))
    normalized = normalize(model)
    assert _op_types(normalized) == ["MatMul", "BatchNormalization"]
    assert_same_outputs(model, normalized)


def test_producer_output_read_twice_keeps_the_batchnorm() -> None:
    model = _linear_bn("gemm_trans_b")
    model.graph.output.append(helper.make_tensor_value_info("h", FLOAT, None))
    normalized = normalize(model)
    assert _op_types(normalized) == ["Gemm", "BatchNormalization"]
    assert_same_outputs(model, normalized)


def test_shared_weight_is_copied_not_changed() -> None:
    # A second Conv reads the same weight: folding must leave its result alone.
    model = _linear_bn("conv_grouped_no_bias")
    model.graph.node.append(helper.make_node("Conv", ["x", "w"], ["z"], name="other", group=2))
    model.graph.output.append(helper.make_tensor_value_info("z", FLOAT, None))
    normalized = normalize(model)
    assert _op_types(normalized) == ["Conv", "Conv"]
    folded, other = normalized.graph.node
    assert folded.input[1] != "w" and other.input[1] == "w"
    assert_same_outputs(model, normalized)


def test_batchnorm_on_a_graph_input_stays() -> None:
    model = _linear_bn("gemm_trans_b")
    model.graph.node[1].input[0] = "x"
    model.graph.node[1].input[1:] = [f"bn.{p}" for p in ("gamma", "beta", "mean", "var")]
    # Re-size the BN to the 4 input features.
    rng = np.random.default_rng(1)
    del model.graph.initializer[1:]
    for name in ("gamma", "beta", "mean", "var"):
        value = rng.uniform(0.5, 1.5, 4).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(value, f"bn.{name}"))
    del model.graph.node[0]
    normalized = normalize(model)
    assert _op_types(normalized) == ["BatchNormalization"]
    assert_same_outputs(model, normalized)


def test_conv_with_a_runtime_bias_keeps_the_batchnorm() -> None:
    model = _linear_bn("conv_transpose_grouped")
    del model.graph.initializer[1]  # the bias "b" becomes a graph input
    model.graph.input.append(helper.make_tensor_value_info("b", FLOAT, [6]))
    normalized = normalize(model)
    assert _op_types(normalized) == ["ConvTranspose", "BatchNormalization"]
    feeds = {
        "x": np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32),
        "b": np.linspace(-1, 1, 6).astype(np.float32),
    }
    assert_same_outputs(model, normalized, feeds)
