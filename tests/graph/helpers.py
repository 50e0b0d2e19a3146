"""Oracles shared by the graph tests."""

from __future__ import annotations

import numpy as np
import onnx

from tests.fixtures.models import random_inputs, run_onnxruntime


def assert_same_outputs(
    original: onnx.ModelProto,
    changed: onnx.ModelProto,
    feeds: dict[str, np.ndarray] | None = None,
    rtol: float = 1e-5,
) -> None:
    """ONNX Runtime gives both models' outputs equal within ``rtol`` (scaled by the output)."""
    feeds = random_inputs(original) if feeds is None else feeds
    expected = run_onnxruntime(original, feeds)
    actual = run_onnxruntime(changed, feeds)
    assert [o.name for o in original.graph.output] == [o.name for o in changed.graph.output]
    for want, got in zip(expected, actual, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = max(float(np.abs(want).max()), 1.0)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def serialized(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)
