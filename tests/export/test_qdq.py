"""The QDQ model: ONNX Runtime's int8 kernels, exact folds, storage, and real exported models."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from eightbit.errors import ModelError
from eightbit.export import to_qdq
from eightbit.graph import load_model, save_model
from eightbit.quant import QuantConfig
from tests.export.helpers import (
    make_model,
    min_max_ranges,
    normal,
    optimized_op_types,
    output_scale,
    quantize,
    run,
    run_reference,
    scale_initializers,
)
from tests.fixtures import models as fixtures

FLOAT_KERNELS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}


def conv_depthwise_gemm_matmul() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv+Relu -> depthwise Conv+Clip(0, 6) -> pool -> Gemm+Relu -> MatMul, batch symbolic."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw", pads=[1] * 4, group=8),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["g"], name="fc", transB=1),
        helper.make_node("Relu", ["g"], ["r3"], name="relu3"),
        helper.make_node("MatMul", ["r3", "w4"], ["y"], name="head"),
    ]
    weights = {
        "w1": normal(8, 4, 3, 3, seed=1, scale=0.3),
        "b1": normal(8, seed=2, scale=0.1),
        "w2": normal(8, 1, 3, 3, seed=3, scale=0.5),
        "b2": normal(8, seed=4, scale=0.1),
        "zero": np.float32(0.0),
        "six": np.float32(6.0),
        "w3": normal(16, 8, seed=5, scale=0.4),
        "b3": normal(16, seed=6, scale=0.1),
        "w4": normal(16, 5, seed=7, scale=0.3),
    }
    model = make_model(nodes, [("x", ("batch", 4, 8, 8))], [("y", ("batch", 5))], weights)
    return model, {"x": normal(4, 4, 8, 8, seed=8)}


@pytest.mark.parametrize(
    "config",
    [QuantConfig(), QuantConfig(per_channel=False), QuantConfig(activations="int8")],
    ids=["u8-per-channel", "u8-per-tensor", "s8"],
)
def test_onnxruntime_runs_every_conv_gemm_matmul_on_int8_kernels(config: QuantConfig) -> None:
    model, feeds = conv_depthwise_gemm_matmul()
    quantized = quantize(model, feeds, config)
    kernels = optimized_op_types(quantized.qdq)
    assert not FLOAT_KERNELS & set(kernels), kernels
    assert kernels.count("QLinearConv") == 2
    assert kernels.count("QGemm") == 1
    assert kernels.count("QLinearMatMul") == 1
    assert "Relu" not in kernels and "Clip" not in kernels  # folded into their producers
    assert {d.fused_activation for d in quantized.plan.nodes} >= {"relu1", "relu6", "relu3"}


def test_folded_activations_give_bit_identical_results() -> None:
    """Eq. Q.9: putting the dropped Relu/Clip back in front of their Q changes no bit."""
    model, feeds = conv_depthwise_gemm_matmul()
    quantized = quantize(model, feeds)
    restored = onnx.ModelProto()
    restored.CopyFrom(quantized.qdq)
    clamps = {"c1": ("Relu", []), "c2": ("Clip", ["zero", "six"]), "g": ("Relu", [])}
    for node in restored.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in clamps:
            op_type, bounds = clamps[node.input[0]]
            clamped = node.input[0] + "_clamped"
            restored.graph.node.append(
                helper.make_node(op_type, [node.input[0], *bounds], [clamped], name=clamped)
            )
            node.input[0] = clamped
    restored.graph.initializer.extend(
        [
            numpy_helper.from_array(np.float32(0), "zero"),
            numpy_helper.from_array(np.float32(6), "six"),
        ]
    )
    restored = _sorted(restored)
    assert sum(n.op_type in ("Relu", "Clip") for n in restored.graph.node) == 3
    np.testing.assert_array_equal(
        run(quantized.qdq, feeds, optimized=False), run(restored, feeds, optimized=False)
    )


def test_the_output_is_valid_and_the_input_untouched() -> None:
    model, feeds = conv_depthwise_gemm_matmul()
    quantized = quantize(model, feeds)
    before = quantized.float_model.SerializeToString()
    again = to_qdq(quantized.float_model, quantized.plan)
    assert quantized.float_model.SerializeToString() == before
    onnx.checker.check_model(again, full_check=True)
    assert again.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in again.graph.output] == ["y"]
    for batch in (1, 3):
        assert run(again, {"x": feeds["x"][:batch]}, optimized=True).shape == (batch, 5)


def test_weights_are_stored_as_int8_and_biases_as_int32() -> None:
    model, feeds = conv_depthwise_gemm_matmul()
    qdq = quantize(model, feeds).qdq
    stored = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    for weight in ("w1", "w2", "w3", "w4"):
        assert weight not in stored  # no float copy kept
        assert stored[f"{weight}_quantized"].dtype == np.int8
        assert np.abs(stored[f"{weight}_quantized"]).max() == 127  # narrow range, full use
    for bias in ("b1", "b2", "b3"):
        assert stored[f"{bias}_quantized"].dtype == np.int32


def test_pow2_models_contain_only_power_of_two_scales() -> None:
    model, feeds = conv_depthwise_gemm_matmul()
    quantized = quantize(model, feeds, QuantConfig(scheme="pow2"))
    scales = scale_initializers(quantized.qdq)
    assert len(scales) > 10
    for name, scale in scales.items():
        mantissa, _ = np.frexp(scale.astype(np.float64))
        assert np.all(mantissa == 0.5), name
    for params in quantized.plan.tensors.values():
        assert params.fraction_lengths is not None
        assert np.all(params.zero_point == 0)
    expected = run(quantized.float_model, feeds, optimized=False)
    int8 = run(quantized.qdq, feeds, optimized=True)
    assert np.max(np.abs(int8 - expected)) <= 4 * output_scale(quantized)


def test_a_huge_bias_widens_the_weight_scale_and_stays_exact() -> None:
    """Channel 1 has weights ~1e-9 and bias 3: s_x·s_w would put the bias far beyond int32."""
    weights = normal(2, 3, 1, 1, seed=1)
    weights[1] *= 1e-9
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    initializers = {"w": weights, "b": np.array([0.1, 3.0], np.float32)}
    model = make_model(nodes, [("x", (1, 3, 4, 4))], [("y", (1, 2, 4, 4))], initializers)
    feeds = {"x": normal(1, 3, 4, 4, seed=2)}
    quantized = quantize(model, feeds)
    assert "widened on channel(s) [1]" in (quantized.plan.decision("conv").reason or "")
    stored = {t.name: numpy_helper.to_array(t) for t in quantized.qdq.graph.initializer}
    assert np.abs(stored["b_quantized"]).max() <= 2**30
    expected = run(quantized.float_model, feeds, optimized=False)
    int8 = run(quantized.qdq, feeds, optimized=True)
    assert np.max(np.abs(int8 - expected)) <= 2 * output_scale(quantized)


def test_torch_model_with_batchnorm_constant_biases_and_external_data(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    source = fixtures.torch_export(
        fixtures.torch_small_cnn(),
        torch.randn(2, 3, 8, 8),
        tmp_path / "cnn.onnx",
        external_data=True,
    )
    digest = _digest(tmp_path)
    model = load_model(source)
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)
    feeds = fixtures.random_inputs(model, 16, seed=1)
    quantized = quantize(model, feeds)
    out = tmp_path / "cnn.int8.onnx"
    save_model(quantized.qdq, out)
    assert _digest(tmp_path, skip=out.name) == digest  # the input files are never modified
    reloaded = load_model(out)
    kernels = optimized_op_types(reloaded)
    assert not FLOAT_KERNELS & set(kernels), kernels
    expected = run(quantized.float_model, feeds, optimized=False)
    int8 = run(reloaded, feeds, optimized=True)
    assert np.mean(expected.argmax(1) == int8.argmax(1)) >= 0.9
    assert _sqnr_db(expected, int8) >= 25


@pytest.mark.parametrize("build", [fixtures.opset11_model, fixtures.weights_in_constants])
def test_exported_models_as_users_have_them(build) -> None:
    model = build()
    feeds = fixtures.random_inputs(model, 16, seed=1)
    quantized = quantize(model, feeds)
    onnx.checker.check_model(quantized.qdq, full_check=True)
    kernels = optimized_op_types(quantized.qdq)
    assert {"QLinearConv", "QGemm"} <= set(kernels)
    expected = run(quantized.float_model, feeds, optimized=False)
    assert _sqnr_db(expected, run(quantized.qdq, feeds, optimized=True)) >= 25


def test_a_weight_shared_with_a_float_node_keeps_its_float_copy() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="first"),
        helper.make_node("Conv", ["a", "w"], ["y"], name="second"),
    ]
    weights = {"w": normal(2, 2, 1, 1)}
    model = make_model(nodes, [("x", (1, 2, 3, 3))], [("y", (1, 2, 3, 3))], weights)
    feeds = {"x": normal(1, 2, 3, 3, seed=1)}
    quantized = quantize(model, feeds)
    assert not quantized.plan.decision("second").quantized
    stored = {t.name for t in quantized.qdq.graph.initializer}
    assert {"w", "w_quantized"} <= stored
    expected = run(quantized.float_model, feeds, optimized=False)
    assert _sqnr_db(expected, run(quantized.qdq, feeds, optimized=True)) >= 25


def test_export_refuses_old_opsets_and_foreign_plans() -> None:
    model, feeds = conv_depthwise_gemm_matmul()
    quantized = quantize(model, feeds)
    old = onnx.ModelProto()
    old.CopyFrom(quantized.float_model)
    old.opset_import[0].version = 12
    with pytest.raises(ModelError, match="opset >= 13"):
        to_qdq(old, quantized.plan)
    other = quantize(*_tiny())
    with pytest.raises(ModelError, match="plan does not match the model"):
        to_qdq(quantized.float_model, other.plan)


def _tiny() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="other_conv")]
    weights = {"w": normal(2, 2, 1, 1)}
    model = make_model(nodes, [("x", (1, 2, 3, 3))], [("y", (1, 2, 3, 3))], weights)
    return model, {"x": normal(1, 2, 3, 3)}


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with its nodes in topological order (appended nodes moved up)."""
    produced_by = {out: node for node in model.graph.node for out in node.output}
    ordered: list[onnx.NodeProto] = []
    done: set[str] = set()

    def visit(node: onnx.NodeProto) -> None:
        if node.name in done:
            return
        done.add(node.name)
        for name in node.input:
            if name in produced_by:
                visit(produced_by[name])
        ordered.append(node)

    for node in list(model.graph.node):
        visit(node)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    result.graph.ClearField("node")
    result.graph.node.extend(ordered)
    return result


def _sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = np.sum((reference - test).astype(np.float64) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


def _digest(folder: Path, skip: str = "") -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(skip or "\0")
    }


@pytest.mark.parametrize("excluded", ["dw", "fc"])
def test_a_node_kept_in_float_stays_float_in_onnxruntime(excluded: str) -> None:
    """ORT's WeightBiasQuantization must not quantize a node the plan keeps in float.

    It rewrites a float Conv/Gemm fed by a per-tensor DequantizeLinear into an int8 node;
    the export feeds such a node through a per-channel DequantizeLinear, which it leaves
    alone. The excluded node's float weight must survive into ORT's optimized graph, and
    the QDQ model must compute the same as onnx.reference (the QDQ semantics).
    """
    model, feeds = conv_depthwise_gemm_matmul()
    kept = quantize(model, feeds, QuantConfig(exclude=(excluded,)))
    assert not kept.plan.decision(excluded).quantized
    with_fix = optimized_op_types(kept.qdq)
    float_kernel = {"dw": {"Conv", "FusedConv"}, "fc": {"Gemm", "FusedGemm"}}[excluded]
    assert float_kernel & set(with_fix), with_fix
    np.testing.assert_allclose(
        run(kept.qdq, feeds, optimized=True), run_reference(kept.qdq, feeds), atol=1e-5
    )


def _rebuild_variants() -> tuple[onnx.ModelProto, Any, dict, dict, onnx.ModelProto]:
    """What a fallback's rebuilds meet: the normalized model, its plan, its min/max ranges,
    ranges twice as wide, and a copy whose weight ``w1`` has the same name, other values."""
    from eightbit.graph import Graph
    from eightbit.plan import activation_tensors_to_calibrate

    model, feeds = conv_depthwise_gemm_matmul()
    quantized = quantize(model, feeds)
    normalized, plan = quantized.float_model, quantized.plan
    names = activation_tensors_to_calibrate(Graph(normalized), plan.config)
    ranges = min_max_ranges(normalized, names, feeds)
    wider = {name: (2 * low, 2 * high) for name, (low, high) in ranges.items()}
    moved = onnx.ModelProto()
    moved.CopyFrom(normalized)
    weight = next(t for t in moved.graph.initializer if t.name == "w1")
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 0.75, "w1"))
    return normalized, plan, ranges, wider, moved


def test_a_cache_of_integer_weights_gives_the_same_bytes() -> None:
    # What a fallback's rebuilds do: one cache over exports of the same weights (some with
    # a node excluded; wider input ranges: the same biases with other scales), then a model
    # whose weight has the same name and parameters but other values: neither may get the
    # integers cached for the other.
    from dataclasses import replace

    from eightbit.export import QuantizedConstants
    from eightbit.graph import Graph
    from eightbit.plan import make_plan

    normalized, plan, ranges, wider, moved = _rebuild_variants()
    plans = [plan]
    for excluded in (("dw",), ("fc", "conv")):
        config = replace(plan.config, exclude=excluded)
        plans.append(make_plan(Graph(normalized), ranges, config))
    plans.append(make_plan(Graph(normalized), wider, plan.config))
    cache = QuantizedConstants()
    for model_, plan_ in [(normalized, p) for p in plans] + [(moved, plan), (normalized, plan)]:
        cached = to_qdq(model_, plan_, cache=cache).SerializeToString()
        assert cached == to_qdq(model_, plan_).SerializeToString()
    assert cache.held > 0
    full = QuantizedConstants(max_bytes=0)  # nothing fits: every weight quantized again
    again = to_qdq(moved, plan, cache=full).SerializeToString()
    assert again == to_qdq(moved, plan).SerializeToString()
    assert full.held == 0 and not full.entries


def test_a_cache_of_weight_parameters_gives_the_same_plans() -> None:
    # make_plan's weight and bias parameters reused across a fallback's plans: nodes
    # excluded, wider input ranges (the same biases, other input scales: other bias scales),
    # a weight of the same name with other values; each plan must be the one made without.
    from dataclasses import replace

    from eightbit.graph import Graph
    from eightbit.plan import WeightParamsCache, make_plan

    normalized, plan, ranges, wider, moved = _rebuild_variants()
    cases = [(normalized, ranges, plan.config)]
    cases += [(normalized, ranges, replace(plan.config, exclude=e)) for e in (("dw",), ("fc",))]
    cases += [(normalized, wider, plan.config), (moved, ranges, plan.config)]
    cache = WeightParamsCache()
    for model_, ranges_, config in cases + cases:
        cached = make_plan(Graph(model_), ranges_, config, weights=cache).to_dict()
        assert cached == make_plan(Graph(model_), ranges_, config).to_dict()
    assert cache.held > 0


def test_rebuilds_that_exclude_other_nodes_reuse_the_weight_parameters() -> None:
    # A fallback's rebuilds differ in the excluded nodes (one set each): a node whose
    # constants and input parameters recur must get its cached parameters whatever else
    # is excluded, not a fresh entry per excluded set.
    from dataclasses import replace

    from eightbit.graph import Graph
    from eightbit.plan import WeightParamsCache, make_plan

    normalized, plan, ranges, _, _ = _rebuild_variants()
    cache = WeightParamsCache()
    make_plan(Graph(normalized), ranges, plan.config, weights=cache)
    held = cache.held
    for excluded in (("head",), ("fc", "relu3")):
        config = replace(plan.config, exclude=excluded)
        cached = make_plan(Graph(normalized), ranges, config, weights=cache).to_dict()
        assert cached == make_plan(Graph(normalized), ranges, config).to_dict()
    assert held > 0 and cache.held == held
