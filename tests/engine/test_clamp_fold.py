"""An int16 Clip after a Conv runs as the Conv's bounds (docs/numerics.md §E.14): the
program stores one tensor, and its integers are the unfolded program's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from eightbit.engine import build_program, execute
from eightbit.engine.kernels.activation import ClampStep
from eightbit.quant import QuantConfig, quantize_values
from tests.export.helpers import quantize
from tests.fixtures.clamp16 import CLIP_HIGH, CLIP_LOW, conv_clip

WIDE = QuantConfig(int16=("r",))


def _unfolded(monkeypatch: pytest.MonkeyPatch, model, plan):  # type: ignore[no-untyped-def]
    with monkeypatch.context() as patched:
        patched.setattr("eightbit.engine.build.fold_wide_clamps", lambda program: program)
        return build_program(model, plan)


def test_a_wide_clamp_becomes_the_conv_bounds() -> None:
    model, feeds = conv_clip(tail=True)
    quantized = quantize(model, feeds, WIDE)
    program = build_program(quantized.qdq, quantized.plan)
    assert not any(isinstance(step, ClampStep) for step in program.steps)
    conv = next(step for step in program.steps if step.node == "conv")
    params = quantized.plan.tensors["r"]
    assert params.dtype == "int16" and quantized.plan.tensors["c"] == params
    bounds = (int(quantize_values(CLIP_LOW, params)), int(quantize_values(CLIP_HIGH, params)))
    assert bounds == (-32767, 5461)  # both inside the int16 range: both ends narrowed
    requantization = conv.requantization  # type: ignore[attr-defined]
    assert (requantization.low, requantization.high) == bounds
    stored = [program.formats[name].tensor for name in program.integer_tensors()]
    assert stored == ["x", "r", "y"]  # the Conv writes r; c is not stored


@pytest.mark.parametrize("tail", [False, True])
def test_the_folded_program_computes_the_clamp_exactly(
    monkeypatch: pytest.MonkeyPatch, tail: bool
) -> None:
    model, feeds = conv_clip(tail)
    quantized = quantize(model, feeds, WIDE)
    folded = build_program(quantized.qdq, quantized.plan)
    unfolded = _unfolded(monkeypatch, quantized.qdq, quantized.plan)
    assert len(unfolded.steps) == len(folded.steps) + 1
    rng = np.random.default_rng(5)
    batch = {"x": (rng.standard_normal((16, 3, 6, 6)) * 3).astype(np.float32)}
    ours, theirs = execute(folded, batch), execute(unfolded, batch)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name])
    if not tail:  # the bounds are reached, so an off-by-one there would show
        r = ours["r"]
        assert np.isclose(r.max(), CLIP_HIGH, atol=1e-3)
        assert np.isclose(r.min(), CLIP_LOW, atol=1e-3)


def test_an_eight_bit_clamp_is_left_alone() -> None:
    model, feeds = conv_clip(tail=True)
    quantized = quantize(model, feeds, QuantConfig(scheme="pow2"))
    program = build_program(quantized.qdq, quantized.plan)
    assert any(isinstance(step, ClampStep) for step in program.steps)
