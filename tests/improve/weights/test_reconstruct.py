"""Layer-wise reconstruction (docs/numerics.md §I.8): the layer math against numpy
oracles and planted problems, and the step on a small model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eightbit.errors import ConfigError
from eightbit.export import to_qdq
from eightbit.graph import Graph, make_session, normalize
from eightbit.improve.presets import preset
from eightbit.improve.weights.reconstruct import ReconstructOptions, reconstruct
from eightbit.improve.weights.reconstruct_layer import (
    LayerGrid,
    LayerSums,
    gptq_round,
    least_squares,
    nearest,
    solve_layer,
    trimmed,
)
from eightbit.pipeline import quantize
from eightbit.plan import activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig, quantize_values
from tests.analysis.helpers import classifier, images, planned

# --- Oracles ----------------------------------------------------------------------------


def row_error(
    inputs: np.ndarray, targets: np.ndarray, weight: np.ndarray, bias: np.ndarray
) -> float:
    """Σ ‖x̂ Wᵀ + b − y‖² written out with einsum in float64 (eq. I.13)."""
    out = np.einsum("mgk,gck->mgc", inputs.astype(np.float64), weight) + bias
    return float(np.sum((out - targets.astype(np.float64)) ** 2))


def grid_for(weight: np.ndarray) -> LayerGrid:
    """The per-channel grid of Q.5 (largest weight at ±127), the largest pinned."""
    largest = np.abs(weight).max(axis=2, keepdims=True)
    scale = (largest / 127).astype(np.float32)
    pinned = np.where(np.abs(weight) == largest, np.sign(weight), 0).astype(np.int64)
    return LayerGrid(scale=scale, bound=np.full(scale.shape, 127), pinned=pinned)


def layer(seed: int, groups: int, channels: int, width: int, rows: int, noise: float):  # type: ignore[no-untyped-def]
    """Float weights and bias; correlated float inputs; quantized ones = float + noise."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((groups, channels, width)).astype(np.float32)
    bias = (0.1 * rng.standard_normal((groups, channels))).astype(np.float32)
    mixing = rng.standard_normal((width, width)) / math.sqrt(width)
    floats = rng.standard_normal((rows, groups, width)) @ mixing
    quantized = floats + noise * rng.standard_normal(floats.shape)
    targets = np.einsum("mgk,gck->mgc", floats, weight) + bias
    return weight, bias, quantized, targets


def sums_of(inputs: np.ndarray, targets: np.ndarray, keep: np.ndarray | None = None) -> LayerSums:
    sums = LayerSums.zeros(targets.shape[1], targets.shape[2], inputs.shape[2])
    sums.add(inputs, targets, keep)
    return sums


# --- One layer ----------------------------------------------------------------------------


def test_sums_give_the_row_error_of_the_oracle() -> None:
    weight, bias, inputs, targets = layer(0, groups=3, channels=2, width=9, rows=200, noise=0.1)
    sums = LayerSums.zeros(3, 2, 9)
    for start in range(0, 200, 64):  # in batches: the sums add
        sums.add(inputs[start : start + 64], targets[start : start + 64])
    other = weight + 0.01
    assert sums.error(other, bias) == pytest.approx(row_error(inputs, targets, other, bias))


def test_one_shared_inverse_gives_the_solves_weights() -> None:
    """``solve_layer`` inverts the damped Gram once for the least squares and GPTQ (§I.8.3);
    the oracle is the separate path: ``np.linalg.solve`` for eq. I.11, GPTQ's own inverse."""
    weight, bias, inputs, targets = layer(3, groups=3, channels=16, width=40, rows=500, noise=0.3)
    sums, grid, damping = sums_of(inputs, targets), grid_for(weight), 4.0
    solved = least_squares(sums, weight, bias, damping)  # no inverse given: a solve
    gram = (
        sums.gram
        + np.eye(41)[None]
        * (
            damping * np.mean(np.einsum("gkk->gk", sums.gram)[:, :40], axis=1)
            + 1e-9 * max(float(np.max(np.einsum("gkk->gk", sums.gram))), 1.0)
        )[:, None, None]
    )
    q, new_bias = gptq_round(solved, gram, grid)
    solution = solve_layer(sums, weight, bias, grid, damping)
    assert solution.reconstructed
    np.testing.assert_array_equal(solution.q, q)
    np.testing.assert_allclose(solution.bias, new_bias, rtol=1e-9, atol=1e-12)


def test_least_squares_matches_numpy_lstsq_on_the_augmented_rows() -> None:
    weight, bias, inputs, targets = layer(1, groups=2, channels=3, width=5, rows=300, noise=0.2)
    damping = 0.05
    solved = least_squares(sums_of(inputs, targets), weight, bias, damping)
    for g in range(2):
        rows = np.concatenate([inputs[:, g], np.ones((300, 1))], axis=1)
        lam = damping * np.mean(np.sum(inputs[:, g] ** 2, axis=0))
        lam += 1e-9 * max(np.max(np.diag(rows.T @ rows)), 1.0)
        prior = np.concatenate([weight[g], bias[g][:, None]], axis=1)
        # Ridge toward the prior as ordinary least squares on rows stacked with √λ·I.
        stacked = np.concatenate([rows, math.sqrt(lam) * np.eye(6)])
        wanted = np.concatenate([targets[:, g], math.sqrt(lam) * prior.T])
        oracle = np.linalg.lstsq(stacked, wanted, rcond=None)[0].T
        np.testing.assert_allclose(solved[g], oracle, rtol=1e-6, atol=1e-7)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    groups=st.sampled_from([1, 4]),
    channels=st.sampled_from([1, 5]),
    width=st.sampled_from([1, 9, 24]),
    noise=st.sampled_from([0.0, 0.1, 1.0]),
    damping=st.sampled_from([1e-4, 1.0, 100.0]),
)
def test_reconstruction_never_increases_the_error_it_optimizes(
    seed: int, groups: int, channels: int, width: int, noise: float, damping: float
) -> None:
    weight, bias, inputs, targets = layer(seed, groups, channels, width, rows=40, noise=noise)
    grid = grid_for(weight)
    solution = solve_layer(sums_of(inputs, targets), weight, bias, grid, damping)
    q_nearest = nearest(weight, grid)
    scale = grid.scale.astype(np.float64)
    before = row_error(inputs, targets, scale * q_nearest, bias)
    after = row_error(inputs, targets, scale * solution.q, solution.bias)
    assert after <= before * (1 + 1e-9) + 1e-12
    assert solution.nearest_error == pytest.approx(before, rel=1e-6, abs=1e-9)
    # On the grid, within the bounds, the largest weight of every channel kept at ±B.
    assert np.all(np.abs(solution.q) <= 127)
    pinned = grid.pinned != 0
    assert np.array_equal(solution.q[pinned], (grid.pinned * 127)[pinned])
    if not solution.reconstructed:
        assert np.array_equal(solution.q, q_nearest)


def test_recovers_a_planted_layer_on_the_grid() -> None:
    # Weights exactly on the grid and inputs without noise: the optimum is the planted
    # layer itself, error zero; reconstruction must find it, integers and bias.
    rng = np.random.default_rng(7)
    groups, channels, width = 2, 4, 12
    grid = grid_for(rng.standard_normal((groups, channels, width)))
    planted_q = rng.integers(-126, 127, (groups, channels, width))
    planted_q = np.where(grid.pinned != 0, grid.pinned * 127, planted_q)
    planted = grid.scale.astype(np.float64) * planted_q
    planted_bias = rng.standard_normal((groups, channels))
    inputs = rng.standard_normal((500, groups, width))
    targets = np.einsum("mgk,gck->mgc", inputs, planted) + planted_bias
    # Start from a perturbed float layer: nearest rounding of it is off by a step or two.
    start = planted + grid.scale * rng.uniform(-2.0, 2.0, planted.shape)
    start = np.where(grid.pinned != 0, planted, start)
    solution = solve_layer(
        sums_of(inputs, targets), start, np.zeros((groups, channels)), grid, 1e-8
    )
    assert solution.reconstructed
    assert np.array_equal(solution.q, planted_q)
    np.testing.assert_allclose(solution.bias, planted_bias, atol=1e-6)


def test_removes_a_planted_input_error() -> None:
    # The quantized network delivers inputs shifted by a planted offset per input (what a
    # clipped range does to a tensor's mean). The float weights then miss by W·c; the
    # bias re-fit undoes it, and what is left is the grid's rounding.
    rng = np.random.default_rng(3)
    weight, bias, floats, targets = layer(3, groups=2, channels=6, width=16, rows=2000, noise=0)
    shifted = floats + rng.uniform(-0.3, 0.3, 16)
    grid = grid_for(weight)
    solution = solve_layer(sums_of(shifted, targets), weight, bias, grid, 1e-6)
    unshifted = solve_layer(sums_of(floats, targets), weight, bias, grid, 1e-6)
    assert solution.nearest_db < 25
    assert solution.db > 40
    assert solution.db == pytest.approx(unshifted.db, abs=1.0)


def test_a_layer_without_bias_keeps_none() -> None:
    # Targets with an offset a bias would absorb: without a bias input the step must not
    # invent one (the bias column reads zeros and stays at its prior, zero).
    weight, _, inputs, targets = layer(4, groups=1, channels=3, width=6, rows=300, noise=0.1)
    sums = LayerSums.zeros(1, 3, 6)
    sums.add(inputs, targets + 1.0, with_bias=False)
    solution = solve_layer(sums, weight, np.zeros((1, 3)), grid_for(weight), 0.01)
    np.testing.assert_array_equal(solution.bias, 0.0)


def test_gptq_with_independent_inputs_is_nearest_rounding() -> None:
    # H diagonal: no column can make up for another, and the bias column is decoupled.
    rng = np.random.default_rng(0)
    target = rng.standard_normal((3, 4, 8))
    gram = np.tile(np.diag(rng.uniform(1, 2, 8)), (3, 1, 1))
    grid = grid_for(target[:, :, :7])
    q, bias = gptq_round(target, gram, grid)
    np.testing.assert_array_equal(q, nearest(target[:, :, :7], grid))
    np.testing.assert_allclose(bias, target[:, :, 7])


def test_trimming_drops_the_largest_misses_per_group() -> None:
    miss = np.zeros((10, 2, 3))
    miss[4, 0] = 5.0
    miss[7, 1] = -3.0
    keep = trimmed(miss, 0.9)
    assert not keep[4, 0] and not keep[7, 1]
    assert keep.sum() == 18
    assert trimmed(miss, 1.0).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [("samples", 0), ("rows_per_sample", 1.5), ("damping", 0.0), ("keep", 0.0), ("seed", "a")],
)
def test_options_are_checked(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        ReconstructOptions(**{field: value})  # type: ignore[arg-type]


# --- The step on a model ---------------------------------------------------------------------


def test_step_keeps_the_plan_is_deterministic_and_reports_layers() -> None:
    data = images(24, seed=1)
    model, plan, ranges = planned(classifier(seed=3), data)
    options = ReconstructOptions(samples=16, rows_per_sample=32)
    first, report = reconstruct(model, plan, {"input": data}, options)
    second, _ = reconstruct(model, plan, {"input": data}, options)
    assert first.SerializeToString() == second.SerializeToString()
    # The same plan comes out of the reconstructed model: every weight on its old grid.
    result = Graph(first)
    assert dict(make_plan(result, ranges, plan.config).tensors) == dict(plan.tensors)
    for name in ("w1", "w2", "fc_w"):
        params = plan.tensors[name]
        values = np.asarray(result.initializers[name], np.float64)
        stored = quantize_values(values, params).astype(np.float64)
        axis_shape = (-1,) + (1,) * (values.ndim - 1)
        np.testing.assert_allclose(stored * params.scale.reshape(axis_shape), values, rtol=1e-6)
    assert [gain.layer for gain in report.layers] == ["conv1", "conv2", "fc"]
    assert all(gain.after_db >= gain.before_db for gain in report.layers)
    assert report.name == "reconstruct" and report.before_db is not None
    assert report.after_db is not None
    session = make_session(to_qdq(first, plan))
    assert np.all(np.isfinite(session.run(None, {"input": data[:4]})[0]))


def test_quantize_runs_the_step_and_then_corrects_only_the_output_layer() -> None:
    data = images(40, seed=2)
    result = quantize(
        classifier(seed=3),
        {"input": data},
        check_samples=8,
        # The steps alone: one class column of this random classifier misses the safety
        # net's 10 dB floor (§I.9), which would add a fallback after them.
        improve=preset("default", reconstruct=True, safety_net=False),
    )
    names = [step.name for step in result.plan.steps]
    assert names == ["equalize", "clipping", "reconstruct", "bias_correction"]
    correction = result.plan.steps[-1]
    assert any("output layer" in note for note in correction.notes)
    assert result.check is not None and result.check.outputs[0].sqnr_db > 20
    with pytest.raises(ConfigError, match="--reconstruct needs calibration samples"):
        quantize(classifier(), None, ranges=_wide(), improve=preset("fast", reconstruct=True))


def _wide() -> Any:
    """Ranges wide enough for the classifier (a mapping of pairs, as make_plan reads)."""
    model = normalize(classifier())
    names = activation_tensors_to_calibrate(Graph(model), QuantConfig())
    return {name: (-8.0, 8.0) for name in names}


def test_progress_counts_the_layers_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    data = images(16, seed=1)
    model, plan, _ = planned(classifier(seed=3), data)
    options = ReconstructOptions(samples=8, rows_per_sample=16)
    quiet, _ = reconstruct(model, plan, {"input": data}, options)
    shown, _ = reconstruct(model, plan, {"input": data}, options, progress=True)
    assert quiet.SerializeToString() == shown.SerializeToString()
    err = capsys.readouterr().err
    assert "reconstructing" in err and "3/3" in err


def _gptq_column_by_column(
    target: np.ndarray, gram: np.ndarray, grid: LayerGrid
) -> tuple[np.ndarray, np.ndarray]:
    """The definition of eq. I.12: after each column, update every later column."""
    width = target.shape[2] - 1
    upper = np.transpose(np.linalg.cholesky(np.linalg.inv(gram)), (0, 2, 1))
    work = target.astype(np.float64).copy()
    q = np.zeros(target[:, :, :width].shape, np.int64)
    scale, bound = grid.scale[:, :, 0], grid.bound[:, :, 0]
    for j in range(width):
        rounded = np.clip(np.rint(work[:, :, j] / scale), -bound, bound)
        rounded = np.where(grid.pinned[:, :, j] != 0, grid.pinned[:, :, j] * bound, rounded)
        q[:, :, j] = rounded
        error = (work[:, :, j] - scale * rounded) / upper[:, None, j, j]
        work[:, :, j + 1 :] -= error[:, :, None] * upper[:, None, j, j + 1 :]
    return q, work[:, :, width]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), width=st.integers(1, 40), block=st.integers(1, 16))
def test_lazy_block_updates_round_as_the_column_by_column_loop(
    seed: int, width: int, block: int
) -> None:
    weight, bias, inputs, targets = layer(
        seed, groups=2, channels=3, width=width, rows=200, noise=0.1
    )
    sums = sums_of(inputs, targets)
    grid = grid_for(weight)
    target = least_squares(sums, weight, bias, 0.1)
    gram = sums.gram + 0.1 * np.eye(width + 1)[None]  # damped, as solve_layer does
    q, new_bias = gptq_round(target, gram, grid, block=block)
    q_ref, bias_ref = _gptq_column_by_column(target, gram, grid)
    # The same terms summed in another order: equal integers except at an exact tie, which
    # random data does not produce.
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_allclose(new_bias, bias_ref, rtol=1e-9, atol=1e-9)
