"""Validation of an int8 model whose stem reads a SpaceToDepth (docs/numerics.md §Q11)."""

from __future__ import annotations

import numpy as np

import eightbit
from eightbit.analysis import validate
from tests.graph.helpers import stem_model


def test_validate_compares_a_space_to_depth_stem_with_its_float_model() -> None:
    model = stem_model(size=(32, 32))
    rng = np.random.default_rng(0)
    data = rng.standard_normal((24, 3, 32, 32)).astype(np.float32)
    result = eightbit.quantize(model, data, check_samples=0, improve="fast")
    assert any(node.op_type == "SpaceToDepth" for node in result.model.graph.node)
    report = validate(model, result.model, data[:8], latency_runs=2)
    assert report.outputs[0].sqnr_db > 20
    assert report.layers is not None and report.layers.unmatched == ()
    activations = {tensor.name for tensor in report.layers.activations}
    assert "x" in activations  # the input's quantization, read through the moved integers
    (weight,) = [w for w in report.layers.weights if w.name == "w"]
    assert weight.sqnr_own_db > 30  # the rewritten weight against the float weight, rewritten
    assert report.latency is not None
