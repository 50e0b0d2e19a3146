"""Parameter choice (docs/numerics.md §Q1-§Q4): properties checked with exact arithmetic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from eightbit.errors import DataError, ModelError
from eightbit.quant import (
    BIAS_LIMIT,
    MIN_SCALE,
    QuantConfig,
    QuantParams,
    activation_params,
    bias_params,
    dequantize_values,
    fit_weight_to_bias,
    quantize_values,
    weight_params,
)

AFFINE_U8 = QuantConfig()
AFFINE_S8 = QuantConfig(activations="int8")
POW2 = QuantConfig(scheme="pow2")
_bounds = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=300, deadline=None)
@given(lo=_bounds, hi=_bounds, config=st.sampled_from([AFFINE_U8, AFFINE_S8]))
def test_affine_zero_is_exact_and_the_range_is_covered(
    lo: float, hi: float, config: QuantConfig
) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    params = activation_params(lo, hi, config)
    s, z = Fraction(float(params.scale)), int(params.zero_point)
    assert params.dtype == config.activations
    assert quantize_values(0.0, params) == z and dequantize_values(z, params) == 0.0
    # The representable interval reaches the widened range to within half a step (eq. Q.4),
    # give or take the float32 rounding of the scale: at most 2^-24 of it, so 2^-24 of the
    # range over its steps; the bound allows 2^-23 (the ideal scale's own rounding below).
    lo_w, hi_w = Fraction(min(lo, 0.0)), Fraction(max(hi, 0.0))
    rounding = (hi_w - lo_w) * Fraction(1, 2**23)
    if hi_w > lo_w:
        assert s * (params.qmin - z) <= lo_w + s / 2 + rounding
        assert s * (params.qmax - z) >= hi_w - s / 2 - rounding
        ideal = (hi_w - lo_w) / (params.qmax - params.qmin) * (1 + Fraction(1, 2**23))
        assert s <= max(ideal, Fraction(MIN_SCALE))  # no wider than needed, or the floor


def test_affine_edge_cases() -> None:
    relu = activation_params(0.0, 6.0, AFFINE_U8)
    assert int(relu.zero_point) == 0 and float(relu.scale) == pytest.approx(6 / 255)
    signed = activation_params(0.0, 6.0, AFFINE_S8)
    assert int(signed.zero_point) == -128
    dead = activation_params(0.0, 0.0, AFFINE_U8)  # all zeros: as if [0, 1]
    assert float(dead.scale) == np.float32(1 / 255) and int(dead.zero_point) == 0
    positive = activation_params(2.0, 5.0, AFFINE_U8)  # widened down to 0
    assert int(positive.zero_point) == 0 and float(positive.scale) == np.float32(5 / 255)
    tiny = activation_params(0.0, 1e-30, AFFINE_U8)
    assert float(tiny.scale) == 2.0**-32


@pytest.mark.parametrize(("lo", "hi"), [(np.nan, 1.0), (0.0, np.inf), (2.0, 1.0)])
def test_bad_ranges_are_data_errors(lo: float, hi: float) -> None:
    with pytest.raises(DataError, match="range"):
        activation_params(lo, hi, AFFINE_U8)


@settings(max_examples=300, deadline=None)
@given(lo=_bounds, hi=_bounds)
def test_pow2_fraction_length_is_the_best_precision(lo: float, hi: float) -> None:
    """f is the largest integer with lo >= -128·2^-f and hi < 128·2^-f (eq. Q.8)."""
    lo, hi = min(lo, hi), max(lo, hi)
    assume(lo != 0 or hi != 0)
    params = activation_params(lo, hi, POW2)
    (f,) = np.atleast_1d(params.fraction_lengths)
    assert params.dtype == "int8" and int(params.zero_point) == 0

    def fits(length: int) -> bool:
        step = Fraction(2) ** -length
        return Fraction(lo) >= -128 * step and Fraction(hi) < 128 * step

    assert fits(int(f)) and (f == 32 or not fits(int(f) + 1))


def test_pow2_all_zero_range_is_minus_one_to_one() -> None:
    assert activation_params(0.0, 0.0, POW2).fraction_lengths == 7


def test_weights_per_channel_use_each_channels_maximum() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    w[2] = 0.0  # a dead channel takes the per-tensor scale (§Q2)
    params = weight_params(w, 0, AFFINE_U8)
    expected = np.abs(w).reshape(4, -1).max(axis=1) / 127
    expected[2] = np.abs(w).max() / 127
    np.testing.assert_allclose(params.scale, expected, rtol=1e-7)
    assert params.axis == 0 and params.narrow_range and params.dtype == "int8"
    q = quantize_values(w, params)
    assert np.abs(q).reshape(4, -1).max(axis=1).tolist() == [127, 127, 0, 127]
    error = np.abs(dequantize_values(q, params) - w)
    assert np.all(error <= params.scale.reshape(4, 1, 1, 1) / 2 * (1 + 1e-6))


def test_weights_per_tensor_negative_axis_and_all_zero() -> None:
    w = np.array([[1.0, -2.0], [0.5, 4.0]], np.float32)
    assert float(weight_params(w, None, AFFINE_U8).scale) == np.float32(4 / 127)
    assert weight_params(w, -1, AFFINE_U8).axis == 1
    assert float(weight_params(np.zeros((2, 2)), None, AFFINE_U8).scale) == np.float32(1 / 127)
    with pytest.raises(ModelError, match="weight of shape \\(2, 2\\) has no channel axis 2"):
        weight_params(w, 2, AFFINE_U8)
    with pytest.raises(ModelError, match="NaN or infinite"):
        weight_params(np.array([np.nan]), None, AFFINE_U8)


def test_pow2_weights_are_powers_of_two_that_hold_each_channel() -> None:
    w = np.array([[0.9, -0.2], [3.0, 1.0], [0.0, 0.0]], np.float32)
    params = weight_params(w, 0, POW2)
    np.testing.assert_array_equal(params.fraction_lengths, [7, 5, 5])  # dead row: tensor's f
    assert np.all(np.abs(quantize_values(w, params)) <= 127)


def test_bias_scale_is_the_float32_product() -> None:
    x = activation_params(-1.0, 3.0, AFFINE_U8)
    w = weight_params(np.array([[0.5], [2.0]], np.float32), 0, AFFINE_U8)
    bias = bias_params(x, w)
    np.testing.assert_array_equal(bias.scale, x.scale * w.scale)
    assert bias.dtype == "int32" and bias.axis == 0 and np.all(bias.zero_point == 0)
    assert bias_params(x, weight_params(np.ones((2, 1)), None, AFFINE_U8)).axis is None


@pytest.mark.parametrize("config", [AFFINE_U8, POW2])
def test_a_bias_that_would_overflow_widens_only_its_channel(config: QuantConfig) -> None:
    x = activation_params(-1.0, 1.0, config)
    w = np.array([[1e-9, -1e-9], [0.5, 0.25]], np.float32)
    b = np.array([20.0, 0.1], np.float32)
    params = weight_params(w, 0, config)
    fitted, widened = fit_weight_to_bias(b, x, params)
    assert widened == (0,)
    assert fitted.scale[1] == params.scale[1] and fitted.scale[0] > params.scale[0]
    assert (fitted.fraction_lengths is not None) == (config.scheme == "pow2")
    bias = bias_params(x, fitted)
    q = quantize_values(b, bias)
    assert np.all(np.abs(q.astype(np.int64)) <= BIAS_LIMIT)
    assert abs(float(dequantize_values(q, bias)[0]) - 20.0) <= float(bias.scale[0])  # exact
    assert fit_weight_to_bias(np.array([1e-6, 0.1]), x, params) == (params, ())


def test_fit_refuses_a_bias_of_the_wrong_size() -> None:
    x = activation_params(-1.0, 1.0, AFFINE_U8)
    params = weight_params(np.ones((2, 3)), 0, AFFINE_U8)
    with pytest.raises(ModelError, match="a bias of 3 values does not match 2 weight channels"):
        fit_weight_to_bias(np.ones(3), x, params)


def test_per_channel_input_parameters_are_refused_for_a_bias() -> None:
    x = QuantParams([0.1, 0.2], [0, 0], "uint8", axis=1)
    w = weight_params(np.ones((2, 1)), 0, AFFINE_U8)
    with pytest.raises(ModelError, match="per-tensor"):
        bias_params(x, w)


def test_the_bias_check_of_all_channels_is_the_check_of_each() -> None:
    from eightbit.quant.choose import _bias_fits, _biases_fit

    input_scale = 0.0123
    scales = np.array([1e-9, 2e-7, 0.5, 0.0, 3e-4, 1e-9], np.float32)
    products = [float(np.float32(input_scale) * scale) for scale in scales]
    # Magnitudes at the limit of their channel, just past it, far below, and a zero scale.
    magnitudes = np.array(
        [products[0] * BIAS_LIMIT, np.nextafter(products[1] * BIAS_LIMIT, np.inf), 1.0, 1.0,
         0.0, products[5] * BIAS_LIMIT * (1 + 1e-9)]
    )  # fmt: skip
    pairs = zip(magnitudes.tolist(), scales.tolist(), strict=True)
    each = [_bias_fits(m, input_scale, s) for m, s in pairs]
    assert _biases_fit(magnitudes, input_scale, scales).tolist() == each
    assert each == [True, False, True, False, True, False]
