"""The quantized network carried forward layer by layer (docs/numerics.md §I.8.1): the same
reconstructed weights as running the QDQ network from its inputs for every layer, and a
frontier that holds only what the layers still to come read."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import eightbit.improve.weights.reconstruct as reconstruct_module
from eightbit.export import to_qdq
from eightbit.graph import Graph
from eightbit.improve.weights.frontier import Frontier
from eightbit.improve.weights.layerwise import quantized_reader, weight_layers
from eightbit.improve.weights.reconstruct import ReconstructOptions, reconstruct, width
from eightbit.plan import QuantPlan
from eightbit.quant import QuantConfig
from tests.analysis.helpers import planned


def residual_cnn(seed: int = 0) -> onnx.ModelProto:
    """stem -> (1x1, depthwise, 1x1) + stem -> two convs of one tensor concatenated ->
    pool -> Gemm: a residual add, a tensor read by two layers, a depthwise layer."""
    rng = np.random.default_rng(seed)
    weights = {
        "w_stem": (8, 3, 3, 3),
        "w_expand": (16, 8, 1, 1),
        "w_depthwise": (16, 1, 3, 3),
        "w_project": (8, 16, 1, 1),
        "w_left": (6, 8, 3, 3),
        "w_right": (6, 8, 1, 1),
        "fc_w": (5, 12),
    }
    initializers = [
        numpy_helper.from_array((0.4 * rng.standard_normal(shape)).astype(np.float32), name)
        for name, shape in weights.items()
    ]
    for name, size in (("b_stem", 8), ("b_expand", 16), ("b_depthwise", 16), ("b_project", 8)):
        bias = (0.1 * rng.standard_normal(size)).astype(np.float32)
        initializers.append(numpy_helper.from_array(bias, name))
    conv = helper.make_node
    depthwise: dict[str, Any] = {"pads": [1] * 4, "group": 16}
    nodes = [
        conv("Conv", ["input", "w_stem", "b_stem"], ["stem"], "stem", pads=[1] * 4),
        conv("Relu", ["stem"], ["stem_r"], "stem_relu"),
        conv("Conv", ["stem_r", "w_expand", "b_expand"], ["expand"], "expand"),
        conv("Relu", ["expand"], ["expand_r"], "expand_relu"),
        conv("Conv", ["expand_r", "w_depthwise", "b_depthwise"], ["dw"], "depthwise", **depthwise),
        conv("Relu", ["dw"], ["dw_r"], "depthwise_relu"),
        conv("Conv", ["dw_r", "w_project", "b_project"], ["project"], "project"),
        conv("Add", ["stem_r", "project"], ["block"], "residual"),
        conv("Conv", ["block", "w_left"], ["left"], "left", pads=[1] * 4, strides=[2, 2]),
        conv("Conv", ["block", "w_right"], ["right"], "right", strides=[2, 2]),
        conv("Concat", ["left", "right"], ["joined"], "concat", axis=1),
        conv("GlobalAveragePool", ["joined"], ["pooled"], "pool"),
        conv("Flatten", ["pooled"], ["flat"], "flatten"),
        conv("Gemm", ["flat", "fc_w"], ["logits"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "residual_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 10, 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def samples(count: int = 40, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, 10, 10)).astype(np.float32)


def _from_the_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path before the frontier: every layer runs the QDQ network from its inputs
    (what a model with subgraphs still does)."""
    monkeypatch.setattr(reconstruct_module, "has_subgraphs", lambda model: True)


@pytest.mark.parametrize("exclude", [(), ("expand_relu", "residual")])
def test_one_pass_gives_the_weights_of_the_pass_per_layer(
    monkeypatch: pytest.MonkeyPatch, exclude: tuple[str, ...]
) -> None:
    # With float nodes (exclude) the frontier also carries float tensors.
    data = samples()
    model, plan, _ = planned(residual_cnn(), data, QuantConfig(exclude=exclude))
    options = ReconstructOptions(samples=40, rows_per_sample=24)
    carried, report = reconstruct(model, plan, {"input": data}, options)
    assert any("carried forward" in note for note in report.notes)
    with monkeypatch.context() as patched:
        _from_the_inputs(patched)
        rerun, old_report = reconstruct(model, plan, {"input": data}, options)
    assert not any("carried forward" in note for note in old_report.notes)
    assert carried.SerializeToString() == rerun.SerializeToString()
    assert report.layers == old_report.layers
    assert sum(gain.after_db > gain.before_db for gain in report.layers) >= 3


def test_frontier_reads_what_the_network_computes_and_keeps_only_what_is_still_read() -> None:
    data = samples(24)
    model, plan, _ = planned(residual_cnn(), data)
    graph = Graph(model)
    layers, _ = weight_layers(graph, plan)
    batches = [{"input": data[i : i + 8]} for i in range(0, 24, 8)]
    order = [layer.input for layer in layers if layer.input != "input"]
    qdq = to_qdq(model, plan)
    frontier = Frontier(qdq, order, batches)
    held = []
    for tensor in order:
        read = quantized_reader(model, plan, tensor, None)
        for batch, value in zip(batches, frontier.read(qdq, tensor), strict=True):
            np.testing.assert_array_equal(value, read(batch))
        held.append(sorted(frontier.values))
        # Kept values are stored integers (QuantizeLinear outputs), one per batch.
        assert all(v.dtype in (np.int8, np.uint8) for vs in frontier.values.values() for v in vs)
        assert all(len(vs) == len(batches) for vs in frontier.values.values())
    # The stem's output is read by the expand layer and by the residual Add: kept until
    # the Add has run; the Add's output by both strided convs; each layer's own input
    # until that layer has run; nothing once the last layer's input is read.
    assert held == [
        ["stem_r_quantized"],
        ["expand_r_quantized", "stem_r_quantized"],
        ["dw_r_quantized", "stem_r_quantized"],
        ["block_quantized"],
        ["block_quantized"],
        [],
    ]
    assert frontier.freed == 4
    assert frontier.peak_bytes >= 24 * 8 * 10 * 10  # stem_r as int8, every sample
    with pytest.raises(ValueError, match="expected"):
        next(frontier.read(qdq, order[0]))


def test_a_layer_wider_than_max_width_keeps_its_weights_and_is_reported() -> None:
    # left reads 8 channels x 3x3 taps: 72 inputs per output channel; the rest read <= 27.
    data = samples(24)
    model, plan, _ = planned(residual_cnn(), data)
    options = ReconstructOptions(samples=24, rows_per_sample=16, max_width=50)
    result, report = reconstruct(model, plan, {"input": data}, options)
    weights = {t.name: t for t in model.graph.initializer}
    after = {t.name: t for t in result.graph.initializer}
    assert after["w_left"] == weights["w_left"]
    assert after["w_right"] != weights["w_right"]
    assert "left" not in [gain.layer for gain in report.layers]
    assert "left at nearest rounding: left (72 inputs per output channel, over 50)" in report.notes
    assert width_of(model, plan) == {"stem": 27, "expand": 8, "depthwise": 9, "project": 16,
                                     "left": 72, "right": 8, "fc": 12}  # fmt: skip


def width_of(model: onnx.ModelProto, plan: QuantPlan) -> dict[str, int]:
    layers, _ = weight_layers(Graph(model), plan)
    return {layer.node: width(layer) for layer in layers}


def test_a_layer_of_many_groups_solves_on_one_blas_thread() -> None:
    from threadpoolctl import threadpool_info

    from eightbit.improve.weights.reconstruct_layer import blas_threads_for

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before = blas_threads()
    with blas_threads_for(32):
        assert blas_threads() == {1}
    with blas_threads_for(1):
        assert blas_threads() == before
    assert blas_threads() == before
