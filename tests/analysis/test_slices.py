"""Per-slice and per-part verdicts (§A.9) against a direct numpy oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eightbit.analysis.outputs import OutputTally
from eightbit.analysis.slices import Part, judged_axes, output_parts, slice_verdict
from eightbit.graph import Graph, normalize
from tests.fixtures.joins import BOXES, CLASSES, large_small_concat


def _oracle(reference: np.ndarray, quantized: np.ndarray, axis: int) -> np.ndarray:
    """SQNR of each slice along ``axis``, one slice at a time with np.take."""
    values = []
    for index in range(reference.shape[axis]):
        ref = np.take(reference, index, axis=axis).astype(np.float64)
        out = np.take(quantized, index, axis=axis).astype(np.float64)
        noise = float(np.sum((ref - out) ** 2))
        signal = float(np.sum(ref**2))
        values.append(math.inf if noise == 0 else 10 * math.log10(signal / noise))
    return np.array(values)


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((7, 5, 3, 11)) * rng.uniform(0.1, 10, size=(1, 5, 1, 1))
    quantized = reference + rng.standard_normal(reference.shape) * 0.05
    return reference, quantized


def test_worst_slice_matches_the_numpy_oracle_on_both_judged_axes() -> None:
    reference, quantized = _pair()
    verdict = slice_verdict(reference, quantized)
    assert verdict is not None
    per_axis = {axis: _oracle(reference, quantized, axis) for axis in judged_axes(4)}
    assert set(per_axis) == {1, 3}
    axis, sqnrs = min(per_axis.items(), key=lambda item: item[1].min())
    assert verdict.worst_axis == axis
    assert verdict.worst_index == int(np.argmin(sqnrs))
    assert verdict.worst_sqnr_db == pytest.approx(sqnrs.min(), abs=1e-9)
    assert verdict.slices == 5 + 11
    assert verdict.collapsed == ()


def test_batches_accumulate_to_the_whole_array_verdict() -> None:
    reference, quantized = _pair(1)
    tally = OutputTally("out", parts=(Part("a", 1, 0, 2), Part("b", 1, 2, 5)))
    for start in range(0, 7, 3):
        tally.update(reference[start : start + 3], quantized[start : start + 3])
    streamed = tally.result().slices
    whole = slice_verdict(reference, quantized, tally.parts)
    assert streamed is not None and whole is not None
    assert streamed.worst_sqnr_db == pytest.approx(whole.worst_sqnr_db, abs=1e-9)
    for part, start, stop in zip(streamed.parts, (0, 2), (2, 5), strict=True):
        block = (slice(None), slice(start, stop))
        ref, out = reference[block], quantized[block]
        expected = 10 * math.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
        assert part.sqnr_db == pytest.approx(expected, abs=1e-9)


def test_a_slice_int8_sets_to_a_constant_is_collapsed() -> None:
    reference, quantized = _pair(2)
    quantized[:, 2] = 0.0  # slice 2 of axis 1 carries no signal
    verdict = slice_verdict(reference, quantized)
    assert verdict is not None and verdict.has_collapse
    assert (1, 2) in verdict.collapsed
    assert verdict.worst_sqnr_db == pytest.approx(0.0, abs=1e-9)
    # A float slice that is constant itself is not a collapse when int8 keeps it exactly.
    reference[:, 2] = quantized[:, 2] = 0.5
    assert not slice_verdict(reference, quantized).has_collapse  # type: ignore[union-attr]


def test_a_constant_int8_slice_with_some_signal_left_is_still_collapsed() -> None:
    reference = np.linspace(0.9, 1.1, 40).reshape(4, 2, 5)
    quantized = np.ones_like(reference)  # SQNR ~ 30 dB, but every value the same
    verdict = slice_verdict(reference, quantized)
    assert verdict is not None and verdict.worst_sqnr_db > 20
    assert verdict.has_collapse


def test_output_parts_follow_the_concat_head() -> None:
    graph = Graph(normalize(large_small_concat()))
    (parts,) = output_parts(graph).values()
    assert [(p.name, p.axis, p.start, p.stop) for p in parts] == [
        ("boxes", 1, 0, BOXES),
        ("scores", 1, BOXES, BOXES + CLASSES),
    ]


def test_an_output_with_samples_only_has_no_slices() -> None:
    assert slice_verdict(np.ones(5), np.ones(5)) is None


def test_a_slice_whose_int8_error_exceeds_its_signal_is_collapsed() -> None:
    reference, quantized = _pair(3)
    quantized[:, 1] = -reference[:, 1]  # varies, but the error is twice the signal: -6 dB
    verdict = slice_verdict(reference, quantized)
    assert verdict is not None and (1, 1) in verdict.collapsed
    assert verdict.worst_sqnr_db == pytest.approx(10 * math.log10(0.25), abs=1e-9)


def test_constancy_is_judged_over_every_batch_not_the_last() -> None:
    rng = np.random.default_rng(4)
    tally = OutputTally("out")
    for level in (5.0, 10.0):
        reference = level + 0.1 * rng.standard_normal((4, 3))
        tally.update(reference, np.full_like(reference, level))  # constant within a batch only
    verdict = tally.result().slices
    assert verdict is not None and not verdict.has_collapse


def test_an_output_whose_shape_changes_between_batches_is_judged_whole() -> None:
    tally = OutputTally("tokens")
    for length in (3, 5):
        reference = np.ones((2, length))
        tally.update(reference, reference)
    result = tally.result()
    assert result.slices is None and result.sqnr_db == math.inf
