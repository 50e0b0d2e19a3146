"""Dynamic mode's SmoothQuant (docs/numerics.md §D.9): LayerNorm outputs only, never a Mul
written before the products at run time."""

from __future__ import annotations

from eightbit.improve.smoothquant import smooth_quant
from tests.improve.test_smoothquant import _attention_like, _gelu_block, _inputs


def test_tails_only_leaves_a_gelu_output_alone() -> None:
    model = _gelu_block()  # static mode smooths it through a Mul before the product
    smoothed, report = smooth_quant(model, _inputs(16, 1), tails_only=True)
    assert report is None and smoothed is model


def test_tails_only_still_smooths_a_layer_norm_output_through_gamma_and_beta() -> None:
    model = _attention_like("op")
    smoothed, report = smooth_quant(model, _inputs(16, 1), tails_only=True)
    assert report is not None and report.notes[0].startswith("1 of 1")
    assert smoothed is not model
