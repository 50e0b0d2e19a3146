"""Dynamic mode's SmoothQuant (docs/numerics.md §D.9): LayerNorm outputs only, never a Mul
written before the products at run time."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from eightbit.graph import normalize
from eightbit.improve.smoothquant import smooth_quant
from tests.export.helpers import make_model
from tests.graph.pattern_models import gelu_erf

FEATURES, TOKENS, OUTLIER = 32, 16, 5


def _weight(rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal((FEATURES, FEATURES)) / np.sqrt(FEATURES)).astype(np.float32)


def _block(gelu: bool) -> onnx.ModelProto:
    """inp -> MatMul -> LayerNorm (channel OUTLIER's gamma 40x) -> MatMul, or with ``gelu``
    -> MatMul (column OUTLIER 30x) -> GELU written out -> MatMul: an outlier channel either
    way, absorbed by the LayerNorm's gamma and beta, or by nothing after the GELU."""
    rng = np.random.default_rng(0)
    arrays = {"w_in": _weight(rng), "w_out": _weight(rng)}
    if gelu:
        arrays["w_in"][:, OUTLIER] *= 30.0
        unit, constants = gelu_erf()
    else:
        gamma = np.ones(FEATURES, np.float32)
        gamma[OUTLIER] = 40.0
        unit = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], name="ln")]
        constants = {"gamma": gamma, "beta": np.zeros(FEATURES, np.float32)}
    nodes = [
        helper.make_node("MatMul", ["inp", "w_in"], ["x"], name="first"),
        *unit,
        helper.make_node("MatMul", ["y", "w_out"], ["out"], name="second"),
    ]
    shape = [1, TOKENS, FEATURES]
    return normalize(make_model(nodes, [("inp", shape)], [("out", shape)], arrays | constants, 17))


def _samples() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((16, TOKENS, FEATURES)).astype(np.float32)


def test_tails_only_leaves_a_gelu_output_alone() -> None:
    model = _block(gelu=True)
    assert smooth_quant(model, _samples())[1] is not None  # static mode smooths it by a Mul
    smoothed, report = smooth_quant(model, _samples(), tails_only=True)
    assert report is None and smoothed is model


def test_tails_only_still_smooths_a_layer_norm_output_through_gamma_and_beta() -> None:
    model = _block(gelu=False)
    smoothed, report = smooth_quant(model, _samples(), tails_only=True)
    assert report is not None and report.notes[0].startswith("1 of 1")
    assert smoothed is not model
