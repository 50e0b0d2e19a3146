"""Outlier output channels computed apart (docs/numerics.md §I.12): the float function
stays, a planted outlier column is split off and the int8 output gains from it, and a
CNN's classifier (rank-2 input) is never split."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

import eightbit
from eightbit.graph import Graph, make_session, normalize
from eightbit.improve.outlier_channels import (
    MAX_OUTLIERS,
    outlier_columns,
    sequence_layers,
    split_outlier_channels,
)
from eightbit.improve.presets import preset
from eightbit.quant import QuantConfig
from tests.export.helpers import make_model

FEATURES, TOKENS, OUTLIER = 32, 16, 7


def _residual_block(rank: int = 3) -> onnx.ModelProto:
    """inp -> MatMul (column OUTLIER of the weight 150x) -> + inp -> LayerNormalization:
    a feed-forward output writing an outlier dimension into the residual stream."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((FEATURES, FEATURES)) / math.sqrt(FEATURES)).astype(np.float32)
    weight[:, OUTLIER] *= 150.0
    arrays = {
        "w": weight,
        "gamma": np.ones(FEATURES, np.float32),
        "beta": np.zeros(FEATURES, np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["inp", "w"], ["h"], name="down"),
        helper.make_node("Add", ["h", "inp"], ["r"], name="residual"),
        helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["out"], name="ln"),
    ]
    shape = ["batch", TOKENS, FEATURES] if rank == 3 else ["batch", FEATURES]
    return normalize(make_model(nodes, [("inp", shape)], [("out", shape)], arrays, 17))


def _inputs(count: int, seed: int, rank: int = 3) -> np.ndarray:
    shape = (count, TOKENS, FEATURES) if rank == 3 else (count * TOKENS, FEATURES)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = make_session(model)
    return np.asarray(session.run(None, {"inp": x})[0], np.float64)


def test_splitting_leaves_the_float_function_unchanged():
    model = _residual_block()
    split, report = split_outlier_channels(model, _inputs(8, 1))
    assert report is not None
    assert report.notes[1] == f"down: channel(s) {OUTLIER}"
    x = _inputs(4, 2)
    np.testing.assert_allclose(_run(split, x), _run(model, x), rtol=1e-4, atol=1e-4)


def test_the_outlier_column_is_computed_apart():
    split, _ = split_outlier_channels(_residual_block(), _inputs(8, 1))
    graph = Graph(split)
    main = graph.node("down")
    weight = graph.initializers[main.inputs[1]]
    assert np.all(weight[:, OUTLIER] == 0) and np.all(np.delete(weight, OUTLIER, axis=1) != 0)
    # The layer's output keeps its name, now the sum of the two parts.
    producer = graph.producer("h")
    assert producer is not None and producer.op_type == "Add"


def _sqnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    return 10 * math.log10(np.sum(reference**2) / np.sum((reference - candidate) ** 2))


def test_the_int8_model_gains_from_the_split():
    model = _residual_block()
    data, x = _inputs(32, 1), _inputs(8, 2)
    reference = _run(model, x)
    gains = {}
    for split in (True, False):
        improve = preset("default", outlier_channels=split, safety_net=False)
        result = eightbit.quantize(model, data, QuantConfig(), check_samples=0, improve=improve)
        gains[split] = _sqnr(reference, _run(result.model, x))
        assert ("outlier_channels" in [s.name for s in result.plan.steps]) is split
        decisions = {d.name: d for d in result.plan.nodes}
        assert decisions["down"].quantized
        apart = [d for name, d in decisions.items() if name.startswith("down_")]
        assert len(apart) == 3 * split  # the apart product, its placement, the Add: float
        assert not any(d.quantized for d in apart)
    assert gains[True] > gains[False] + 6


def test_a_rank_two_classifier_is_never_split():
    model = _residual_block(rank=2)
    assert sequence_layers(Graph(model)) == []
    same, report = split_outlier_channels(model, _inputs(2, 1, rank=2))
    assert same is model and report is None


def test_outlier_columns_follow_the_rule():
    ordinary = np.ones(64)
    assert outlier_columns(ordinary).tolist() == []
    planted = ordinary.copy()
    planted[[3, 40]] = [50.0, 20.0]
    assert outlier_columns(planted).tolist() == [3, 40]
    many = ordinary.copy()
    many[: MAX_OUTLIERS + 1] = 50.0  # more than a few: the rest would keep the range
    assert outlier_columns(many).tolist() == []
    mild = ordinary.copy()
    mild[5] = 4.0  # under FACTOR x the median
    assert outlier_columns(mild).tolist() == []
