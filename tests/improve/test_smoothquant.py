"""SmoothQuant (docs/numerics.md §I.11): the float function stays, a planted outlier
channel's range moves into the readers' weights, and models without a LayerNorm before a
matrix product are left alone."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper

import eightbit
from eightbit.graph import Graph, exposing_session, make_session, normalize
from eightbit.improve.smoothquant import find_groups, migration_scales, smooth_quant
from eightbit.quant import QuantConfig
from tests.export.helpers import make_model
from tests.graph.pattern_models import gelu_erf, layer_norm_keras, layer_norm_torch

FEATURES, TOKENS, OUTLIER = 32, 16, 5


def _attention_like(layer_norm: str = "torch", residual: bool = True) -> onnx.ModelProto:
    """inp -> MatMul -> LayerNorm (channel OUTLIER's gamma 40x) -> two MatMuls (query,
    key) and, with ``residual``, an Add of the LayerNorm output itself. ``layer_norm``:
    "torch" (written out, opset 13), "op" (LayerNormalization) or "keras" (tf2onnx's form
    at opset 17, which ``normalize`` fuses into LayerNormalization)."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    if layer_norm == "op":
        gamma = (1 + 0.3 * rng.standard_normal(FEATURES)).astype(np.float32)
        beta = (0.2 * rng.standard_normal(FEATURES)).astype(np.float32)
        arrays |= {"gamma": gamma, "beta": beta}
        norm = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], name="ln")]
    else:
        norm, ln_arrays = (layer_norm_torch if layer_norm == "torch" else layer_norm_keras)()
        arrays |= ln_arrays
    arrays["gamma"] = arrays["gamma"].copy()
    arrays["gamma"][OUTLIER] *= 40.0
    for name in ("w_in", "w_q", "w_k"):
        arrays[name] = (rng.standard_normal((FEATURES, FEATURES)) / math.sqrt(FEATURES)).astype(
            np.float32
        )
    nodes = [
        helper.make_node("MatMul", ["inp", "w_in"], ["x"], name="matmul_in"),
        *norm,
        helper.make_node("MatMul", ["y", "w_q"], ["q"], name="query"),
        helper.make_node("MatMul", ["y", "w_k"], ["k"], name="key"),
        helper.make_node("Add", ["q", "k"], ["qk"], name="join"),
    ]
    if residual:
        nodes.append(helper.make_node("Add", ["qk", "y"], ["out"], name="residual"))
    else:
        nodes.append(helper.make_node("Identity", ["qk"], ["out"], name="last"))
    shape = [1, TOKENS, FEATURES]
    opset = 13 if layer_norm == "torch" else 17
    return normalize(make_model(nodes, [("inp", shape)], [("out", shape)], arrays, opset))


def _inputs(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, TOKENS, FEATURES)).astype(np.float32)


def _run(model: onnx.ModelProto, x: np.ndarray, names: list[str] | None = None) -> list:
    """The outputs (or the tensors ``names``) on the samples ``x``, one at a time."""
    session = make_session(model) if names is None else exposing_session(model, names)
    runs = [session.run(names, {"inp": row[None]}) for row in x]
    return [np.concatenate(parts) for parts in zip(*runs, strict=True)]


@pytest.mark.parametrize("layer_norm", ["torch", "keras", "op"])
def test_smoothing_leaves_the_float_function_unchanged(layer_norm):
    model = _attention_like(layer_norm)
    smoothed, report = smooth_quant(model, _inputs(16, 1))
    assert report is not None and "1 of 1" in report.notes[0]
    x = _inputs(8, 2)
    (before,) = _run(model, x)
    (after,) = _run(smoothed, x)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())


def test_a_planted_outlier_channel_moves_into_the_weights():
    model = _attention_like("torch")
    smoothed, _ = smooth_quant(model, _inputs(16, 1))
    graph, new = Graph(model), Graph(smoothed)
    (smoothed_name,) = [n.inputs[0] for n in new.nodes if n.name == "query"]
    assert smoothed_name != "y"  # the matrix products read the smoothed tensor
    x = _inputs(8, 2)
    (y,) = _run(model, x, ["y"])
    (y_smoothed,) = _run(smoothed, x, [smoothed_name])

    def outlier_ratio(values: np.ndarray) -> float:
        per_channel = np.abs(values).reshape(-1, FEATURES).max(axis=0)
        return float(per_channel[OUTLIER] / np.median(per_channel))

    assert outlier_ratio(y) > 20
    assert outlier_ratio(y_smoothed) < 0.5 * outlier_ratio(y)
    for reader in ("query", "key"):
        weight = next(n.inputs[1] for n in graph.nodes if n.name == reader)
        new_weight = next(n.inputs[1] for n in new.nodes if n.name == reader)
        rows = np.abs(graph.initializers[weight]).max(axis=1)
        new_rows = np.abs(new.initializers[new_weight]).max(axis=1)
        grown = new_rows / rows
        assert grown[OUTLIER] > 4 * np.median(grown)  # row OUTLIER took the range


def test_the_residual_reader_gets_the_layer_norm_output_back_by_name():
    model = _attention_like("torch")
    smoothed, _ = smooth_quant(model, _inputs(16, 1))
    (residual,) = [n for n in Graph(smoothed).nodes if n.name == "residual"]
    producer = Graph(smoothed).producer("y")
    assert "y" in residual.inputs and producer is not None and producer.op_type == "Mul"


def test_migration_scales_follow_the_strength():
    x_max, w_max = np.array([1.0, 100.0, 0.0]), np.array([0.5, 0.5, 0.5])
    expected = [math.sqrt(2), math.sqrt(200), 1.0]
    np.testing.assert_allclose(migration_scales(x_max, w_max, 0.5), expected)
    np.testing.assert_allclose(migration_scales(x_max, w_max, 1.0), [1.0, 100.0, 1.0])


def test_a_model_without_a_layer_norm_before_a_matrix_product_is_left_alone():
    rng = np.random.default_rng(0)
    arrays = {
        name: (rng.standard_normal((FEATURES, FEATURES)) / 6).astype(np.float32)
        for name in ("w1", "w2")
    }
    nodes = [
        helper.make_node("MatMul", ["inp", "w1"], ["h"], name="first"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["out"], name="second"),
    ]
    shape = [1, TOKENS, FEATURES]
    model = normalize(make_model(nodes, [("inp", shape)], [("out", shape)], arrays))
    assert find_groups(Graph(model)) == []
    same, report = smooth_quant(model, _inputs(4, 1))
    assert same is model and report is None


def test_quantize_reports_the_step_and_fast_skips_it():
    model = _attention_like("torch")
    data = _inputs(24, 3)
    default = eightbit.quantize(model, data, QuantConfig(), check_samples=0)
    names = [step.name for step in default.plan.steps]
    assert "smooth_quant" in names
    fast = eightbit.quantize(model, data, QuantConfig(), check_samples=0, improve="fast")
    assert "smooth_quant" not in [step.name for step in fast.plan.steps]


def _gelu_block() -> onnx.ModelProto:
    """inp -> MatMul (column OUTLIER 30x) -> GELU written out -> MatMul: the GELU's output
    has an outlier channel and no constant to absorb 1/s."""
    rng = np.random.default_rng(0)
    w_up = (rng.standard_normal((FEATURES, FEATURES)) / math.sqrt(FEATURES)).astype(np.float32)
    w_up[:, OUTLIER] *= 30.0
    w_down = (rng.standard_normal((FEATURES, FEATURES)) / math.sqrt(FEATURES)).astype(np.float32)
    nodes, arrays = gelu_erf()
    nodes = [
        helper.make_node("MatMul", ["inp", "w_up"], ["x"], name="up"),
        *nodes,
        helper.make_node("MatMul", ["y", "w_down"], ["out"], name="down"),
    ]
    shape = [1, TOKENS, FEATURES]
    arrays |= {"w_up": w_up, "w_down": w_down}
    return normalize(make_model(nodes, [("inp", shape)], [("out", shape)], arrays, 13))


def test_a_gelu_output_is_smoothed_by_a_float_mul_before_the_matrix_product():
    model = _gelu_block()
    smoothed, report = smooth_quant(model, _inputs(16, 1))
    assert report is not None and report.notes[0].startswith("1 of 1")
    graph = Graph(smoothed)
    down = graph.node("down")
    mul = graph.producer(down.inputs[0])
    assert mul is not None and mul.op_type == "Mul" and mul.inputs[0] == "y"
    x = _inputs(8, 2)
    (before,) = _run(model, x)
    (after,) = _run(smoothed, x)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    result = eightbit.quantize(model, _inputs(24, 3), QuantConfig(), check_samples=0)
    decisions = {d.name: d for d in result.plan.nodes}
    assert not decisions[mul.name].quantized  # a float Mul: no Q/DQ pair of its own
    assert "SmoothQuant" in (decisions[mul.name].reason or "")
