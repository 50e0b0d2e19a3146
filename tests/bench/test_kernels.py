"""The kernels section's weight widening, on a small conv model (no bench model is built)."""

from __future__ import annotations

import numpy as np
from benchmarks import kernels
from onnx import numpy_helper

import eightbit
from eightbit.graph import make_session
from tests.fixtures.models import conv_bn_relu, random_inputs


def _weights(model) -> list[tuple[str, np.ndarray]]:  # type: ignore[no-untyped-def]
    return [
        (t.name, numpy_helper.to_array(t))
        for t in model.graph.initializer
        if numpy_helper.to_array(t).dtype == np.int8 and numpy_helper.to_array(t).ndim == 4
    ]


def test_widened_weights_keep_every_same_sign_pair_within_16_bits() -> None:
    model = conv_bn_relu()
    feeds = random_inputs(model, n=16)
    quantized = eightbit.quantize(model, feeds, check_samples=0, improve="fast").model
    before = max(
        kernels._pair_sums(kernels._k_rows(w, "Conv", False)[0]).max()
        for _, w in _weights(quantized)
    )
    widened = kernels.widen_for_16bit_pairs(quantized)
    after = max(
        kernels._pair_sums(kernels._k_rows(w, "Conv", False)[0]).max() for _, w in _weights(widened)
    )
    assert before > kernels.PAIR_LIMIT >= after
    name = next(iter(feeds))
    exact = make_session(quantized).run(None, {name: feeds[name]})[0]
    wide = make_session(widened).run(None, {name: feeds[name]})[0]
    # The same real weights on a coarser grid: outputs stay close (a few output steps).
    assert np.abs(exact - wide).max() <= 0.1 * np.abs(exact).max()


def _bias_scale_errors(model) -> list[float]:  # type: ignore[no-untyped-def]
    """Per Conv, how far the bias scale is from s_x * s_w (ONNX Runtime's int8 kernels need it)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    errors = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 3:
            continue
        x, w, b = (producer[name] for name in node.input)
        expected = inits[x.input[1]].astype(np.float64) * inits[w.input[1]]
        errors.append(float(np.max(np.abs(inits[b.input[1]] / expected - 1))))
    return errors


def test_widened_biases_follow_their_weight_scales() -> None:
    model = conv_bn_relu()
    quantized = eightbit.quantize(
        model, random_inputs(model, n=16), check_samples=0, improve="fast"
    ).model
    errors = _bias_scale_errors(kernels.widen_for_16bit_pairs(quantized))
    assert errors and max(errors) < 1e-6
