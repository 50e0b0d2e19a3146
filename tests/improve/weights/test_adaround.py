"""Learned rounding (docs/numerics.md): the layer math against numpy oracles, the
rows against ONNX Runtime's own Conv/Gemm/MatMul, and the step on a small model."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from eightbit.errors import ConfigError
from eightbit.export import to_qdq
from eightbit.graph import Graph, make_session, normalize
from eightbit.improve.weights.adaround import NO_TORCH, adaround, with_float_weights
from eightbit.improve.weights.adaround_layer import (
    PROBE_ITERATIONS,
    AdaRoundOptions,
    LayerProblem,
    solve_layer,
)
from eightbit.improve.weights.adaround_rows import (
    LayerShape,
    group_bounds,
    layer_of,
    stored_weights,
)
from eightbit.plan import activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig, quantize_values, weight_params
from tests.analysis.helpers import classifier, images, planned
from tests.fixtures.threads import one_torch_thread  # noqa: F401 (autouse)

torch = pytest.importorskip("torch")


FAST = AdaRoundOptions(iterations=60, batch_rows=64, samples=16, rows=512, layer_seconds=None)


# --- Oracles ----------------------------------------------------------------------------


def oracle_error(problem: LayerProblem, q: np.ndarray) -> float:
    """Σ ‖a(x̂ (s·q)ᵀ + b) − y‖² written out with einsum in float64 (eq. R.7)."""
    weights = problem.scale.astype(np.float64) * q
    out = np.einsum("mgk,gck->mgc", problem.inputs.astype(np.float64), weights)
    if problem.bias is not None:
        out = out + problem.bias
    if problem.clamp is not None:
        out = np.clip(out, *problem.clamp)
    return float(np.sum((out - problem.targets.astype(np.float64)) ** 2))


def oracle_nearest(problem: LayerProblem) -> np.ndarray:
    """Round half to even of w / s in float32, as ONNX QuantizeLinear does."""
    ratio = problem.weight.astype(np.float32) / problem.scale.astype(np.float32)
    return np.rint(ratio).astype(np.int64)


def random_problem(
    seed: int,
    groups: int = 1,
    channels: int = 8,
    width: int = 16,
    rows: int = 512,
    *,
    clamp: tuple[float, float] | None = None,
    bias: bool = True,
    noise: float = 0.05,
) -> LayerProblem:
    """A layer whose quantized inputs are the float inputs plus noise, scales as Q.5."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((groups, channels, width)).astype(np.float32)
    largest = np.abs(weight).max(axis=2, keepdims=True)
    scale = (largest / 127).astype(np.float32)
    mixing = rng.standard_normal((width, width)) / math.sqrt(width)
    floats = (rng.standard_normal((rows, groups, width)) @ mixing).astype(np.float32)
    quantized = (floats + noise * rng.standard_normal(floats.shape)).astype(np.float32)
    b = (0.1 * rng.standard_normal((groups, channels))).astype(np.float32) if bias else None
    targets = np.einsum("mgk,gck->mgc", floats.astype(np.float64), weight)
    if b is not None:
        targets = targets + b
    if clamp is not None:
        targets = np.clip(targets, *clamp)
    return LayerProblem(
        weight=weight,
        scale=scale,
        bound=np.full((groups, channels, 1), 127),
        bias=b,
        inputs=quantized,
        targets=targets.astype(np.float32),
        clamp=clamp,
        pinned=np.abs(weight) == largest,
    )


# --- One layer ----------------------------------------------------------------------------


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    groups=st.sampled_from([1, 3]),
    channels=st.sampled_from([1, 4]),
    width=st.sampled_from([3, 9, 20]),
    clamp=st.sampled_from([None, (0.0, math.inf), (0.0, 1.5)]),
    noise=st.sampled_from([0.0, 0.05, 0.5]),
    wild=st.booleans(),
)
def test_learned_rounding_never_increases_the_error_it_optimizes(
    seed: int,
    groups: int,
    channels: int,
    width: int,
    clamp: tuple[float, float] | None,
    noise: float,
    wild: bool,
) -> None:
    problem = random_problem(seed, groups, channels, width, rows=96, clamp=clamp, noise=noise)
    # ``wild``: a learning rate and regularizer that decide the rounding almost at random,
    # so the learned choice is often worse and only the final comparison (R.7) saves it.
    options = AdaRoundOptions(
        iterations=30,
        batch_rows=32,
        layer_seconds=None,
        seed=seed,
        learning_rate=2.0 if wild else 1e-2,
        regularization=10.0 if wild else 0.01,
        warm_start=0.0 if wild else 0.2,
    )
    solution = solve_layer(problem, options)
    nearest = oracle_nearest(problem)
    assert oracle_error(problem, solution.q) <= oracle_error(problem, nearest)
    # Every weight rounded down or up, never further; the largest of a channel at nearest.
    floor = np.floor(problem.weight / problem.scale)
    assert np.all((solution.q == floor) | (solution.q == floor + 1))
    assert np.all(np.abs(solution.q) <= 127)
    assert np.array_equal(solution.q[problem.pinned], nearest[problem.pinned])
    if not solution.learned:
        assert np.array_equal(solution.q, nearest)


def test_reported_errors_match_the_oracle() -> None:
    problem = random_problem(3, groups=2, channels=4, width=9, clamp=(0.0, 6.0))
    solution = solve_layer(problem, FAST)
    assert solution.nearest_error == pytest.approx(oracle_error(problem, oracle_nearest(problem)))
    assert solution.error == pytest.approx(oracle_error(problem, solution.q), rel=1e-9)
    signal = float(np.sum(problem.targets.astype(np.float64) ** 2))
    assert solution.db == pytest.approx(10 * math.log10(signal / solution.error))


def test_learned_rounding_cuts_the_error_of_a_layer_with_correlated_inputs() -> None:
    # Rows far outnumber weights and the inputs are correlated: the case AdaRound is for.
    problem = random_problem(5, channels=16, width=32, rows=4096, noise=0.0)
    options = AdaRoundOptions(iterations=400, batch_rows=256, layer_seconds=None)
    solution = solve_layer(problem, options)
    assert solution.learned
    assert solution.error < 0.7 * solution.nearest_error


def test_time_budget_shortens_the_schedule() -> None:
    problem = random_problem(1)
    options = AdaRoundOptions(iterations=5000, layer_seconds=1e-6)
    assert solve_layer(problem, options).iterations == PROBE_ITERATIONS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("iterations", 0),
        ("rows", 2.5),
        ("layer_seconds", -1.0),
        ("learning_rate", 0.0),
        ("regularization", -0.1),
        ("beta", (2.0, 20.0)),
        ("warm_start", 1.0),
    ],
)
def test_options_are_checked(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        AdaRoundOptions(**{field: value})  # type: ignore[arg-type]


# --- Writing weights back on the grid --------------------------------------------------------


@pytest.mark.parametrize("per_channel", [True, False])
def test_stored_weights_requantize_and_keep_the_scales(per_channel: bool) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((6, 10)).astype(np.float32)
    weight[0, 3] = np.float32(0.7)  # scale · 127 may differ from the channel max in float32
    shape = LayerShape("fc", "Gemm", "w", None, "x", "rows_nk", weight.shape)
    params = weight_params(weight, 0 if per_channel else None, QuantConfig())
    bound, largest = group_bounds(shape, weight, params)
    # Round every weight toward zero (what a zero target asks for), then put the pinned
    # largest weights back at nearest as solve_layer does.
    canonical = shape.canonical(weight)
    toward_zero = np.trunc(canonical / shape.canonical_scale(params)).astype(np.int64)
    nearest = np.rint(canonical / shape.canonical_scale(params)).astype(np.int64)
    q = np.where(np.abs(canonical) == largest, nearest, toward_zero)
    stored = stored_weights(shape, q, params, largest, bound)
    assert stored.dtype == np.float32 and stored.shape == weight.shape
    assert np.array_equal(quantize_values(stored, params), shape.original(q))
    assert weight_params(stored, params.axis, QuantConfig()) == params


# --- Rows against ONNX Runtime -------------------------------------------------------------


def _single_node_model(
    node: onnx.NodeProto, x_shape: list[int], initializers: dict[str, np.ndarray]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


CONVS = [
    ({"pads": [1, 1, 1, 1], "strides": [2, 2]}, (6, 4, 3, 3), (2, 4, 9, 7)),
    ({"group": 4, "pads": [2, 2, 2, 2], "dilations": [2, 2]}, (4, 1, 3, 3), (2, 4, 8, 8)),
    ({"group": 2, "auto_pad": "SAME_UPPER", "strides": [2, 1]}, (4, 2, 3, 2), (2, 4, 7, 6)),
    ({"group": 2, "auto_pad": "SAME_LOWER", "strides": [2, 2]}, (4, 2, 2, 2), (1, 4, 5, 5)),
    ({"pads": [1, 0], "strides": [3]}, (3, 2, 4), (2, 2, 11)),
]


@pytest.mark.parametrize(("attrs", "w_shape", "x_shape"), CONVS)
def test_conv_rows_reproduce_onnxruntime(
    attrs: dict[str, object], w_shape: tuple[int, ...], x_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attrs)
    model = _single_node_model(node, list(x_shape), {"w": w, "b": b})
    expected = make_session(model).run(["y"], {"x": x})[0]
    shape = _layer(model)
    positions = shape.sample_positions(x.shape, 10**6, np.random.default_rng(0))
    rows = shape.rows(x, positions)  # every output position, in order
    out = np.einsum("mgk,gck->mgc", rows.astype(np.float64), shape.canonical(w)) + b.reshape(
        shape.groups, -1
    )
    out = out.reshape(x.shape[0], -1, w.shape[0])  # [n, positions, C_out]
    got = np.moveaxis(out, 1, 2).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("op", "attrs", "w_shape", "x_shape"),
    [
        ("Gemm", {"transB": 1}, (5, 7), (4, 7)),
        ("Gemm", {}, (7, 5), (4, 7)),
        ("MatMul", {}, (7, 5), (3, 6, 7)),
    ],
)
def test_matrix_rows_reproduce_onnxruntime(
    op: str, attrs: dict[str, object], w_shape: tuple[int, int], x_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal(w_shape).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    node = helper.make_node(op, ["x", "w"], ["y"], name="mm", **attrs)
    model = _single_node_model(node, list(x_shape), {"w": w})
    expected = make_session(model).run(["y"], {"x": x})[0]
    shape = _layer(model)
    positions = shape.sample_positions(x.shape, 10**6, np.random.default_rng(0))
    out = np.einsum("mgk,gck->mgc", shape.rows(x, positions), shape.canonical(w))
    np.testing.assert_allclose(out.reshape(expected.shape), expected, rtol=1e-4, atol=1e-5)
    assert np.array_equal(shape.original(shape.canonical(w)), w)


def _layer(model: onnx.ModelProto) -> LayerShape:
    graph = Graph(normalize(model))
    plan = make_plan(graph, {"x": (-4.0, 4.0), "y": (-30.0, 30.0)}, QuantConfig())
    found = layer_of(graph, graph.nodes[0], plan)
    assert isinstance(found, LayerShape), found
    return found


# --- The step on a model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def rounded() -> tuple[onnx.ModelProto, object, onnx.ModelProto, object, object]:
    data = images(48, seed=4)
    model, plan, ranges = planned(classifier(seed=3), data, QuantConfig(exclude=("conv1",)))
    result, report = adaround(model, plan, {"input": data}, FAST)
    return model, plan, result, report, ranges


def test_step_rounds_quantized_layers_on_the_grid_and_keeps_the_plan(rounded) -> None:  # type: ignore[no-untyped-def]
    model, plan, result, report, ranges = rounded
    before, after = Graph(model), Graph(result)
    # The same plan comes out of the rounded model: scales and bias parameters unchanged.
    replanned = make_plan(after, ranges, plan.config)
    assert dict(replanned.tensors) == dict(plan.tensors)
    for name in ("w2", "fc_w"):
        params = plan.tensors[name]
        q = quantize_values(after.initializers[name], params).astype(np.int64)
        # Within half a step of the float weight: rounded down or up, nothing else.
        ratio = np.asarray(before.initializers[name], np.float32) / _broadcast(params, q.shape)
        assert np.all((q == np.floor(ratio)) | (q == np.ceil(ratio)))
    # conv1 is excluded, so float: its weight is untouched; biases never change.
    for name in ("w1", "b1", "b2", "fc_b"):
        assert np.array_equal(after.initializers[name], before.initializers[name])
    assert [gain.layer for gain in report.layers] == ["conv2", "fc"]
    assert all(gain.after_db >= gain.before_db for gain in report.layers)
    assert report.name == "adaround" and report.before_db is not None
    # conv2: 32 of its 64 positions per sample; fc: one row per sample.
    assert report.notes[0].startswith("2 layer(s) optimized on 16 sample(s), 16-512 rows per layer")


def test_step_export_stores_the_learned_integers(rounded) -> None:  # type: ignore[no-untyped-def]
    model, plan, result, _, _ = rounded
    qdq = to_qdq(result, plan)
    stored = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    w2 = quantize_values(Graph(result).initializers["w2"], plan.tensors["w2"])
    assert any(np.array_equal(values, w2) for values in stored.values())
    onnx.checker.check_model(qdq, full_check=True)
    restored = with_float_weights(result, model, ["conv2"])
    assert np.array_equal(Graph(restored).initializers["w2"], Graph(model).initializers["w2"])
    assert np.array_equal(Graph(restored).initializers["fc_w"], Graph(result).initializers["fc_w"])


def test_without_torch_the_step_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "torch" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    model = normalize(classifier())
    plan = make_plan(Graph(model), _wide_ranges(model), QuantConfig())
    with pytest.raises(ConfigError) as error:
        adaround(model, plan, {"input": images(4)})
    assert str(error.value) == NO_TORCH
    assert "pip install 'eightbit[torch]'" in NO_TORCH


def _wide_ranges(model: onnx.ModelProto) -> dict[str, tuple[float, float]]:
    graph = Graph(model)
    return {name: (-8.0, 8.0) for name in activation_tensors_to_calibrate(graph, QuantConfig())}


def _broadcast(params, shape: tuple[int, ...]) -> np.ndarray:  # type: ignore[no-untyped-def]
    scale = params.scale.astype(np.float32)
    if params.axis is None:
        return scale
    view = [1] * len(shape)
    view[params.axis] = -1
    return scale.reshape(view)
