"""Output metrics streamed over batches: hand-computed values and the whole-array functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eightbit.analysis.metrics import (
    ErrorSums,
    accuracy,
    cosine_similarity,
    json_number,
    max_abs_error,
    sqnr_db,
    topk_agreement,
)
from eightbit.analysis.outputs import OutputTally, named_metrics
from eightbit.errors import ConfigError
from eightbit.serialize import json_float


def test_error_sums_hand_computed() -> None:
    sums = ErrorSums()
    sums.update([1.0, 2.0], [1.1, 1.8])
    sums.update([[0.0]], [[0.0]])
    # Σr² = 5, Σ(r − o)² = 0.05 -> 20 dB; cosine = (1.1 + 3.6) / (√5 · √4.45)
    assert sums.sqnr_db == pytest.approx(20.0)
    assert sums.cosine == pytest.approx(4.7 / math.sqrt(5 * 4.45))
    assert sums.max_abs == pytest.approx(0.2)
    assert sums.count == 3


def test_tally_over_uneven_batches_equals_whole_array_metrics() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((50, 12))
    quantized = reference + rng.standard_normal((50, 12)) * 0.3
    labels = rng.integers(0, 12, 50)
    tally = OutputTally("logits")
    for part in np.array_split(np.arange(50), [7, 8, 30]):
        tally.update(reference[part], quantized[part], labels[part])
    result = tally.result()
    assert result.samples == 50
    assert result.sqnr_db == pytest.approx(sqnr_db(reference, quantized))
    assert result.cosine == pytest.approx(cosine_similarity(reference, quantized))
    assert result.max_abs_error == max_abs_error(reference, quantized)
    assert result.top1_agreement == topk_agreement(reference, quantized, 1)
    assert result.top5_agreement == topk_agreement(reference, quantized, 5)
    assert result.float_accuracy == accuracy(reference, labels)
    assert result.int8_accuracy == accuracy(quantized, labels)


def test_agreement_and_accuracy_hand_computed() -> None:
    reference = np.array([[3, 2, 1], [1, 2, 3], [1, 3, 2]], dtype=float)
    quantized = np.array([[3, 2, 1], [1, 3, 2], [3, 1, 2]], dtype=float)
    tally = OutputTally("y")
    tally.update(reference, quantized, np.array([0, 2, 0]))
    result = tally.result()
    assert result.top1_agreement == pytest.approx(1 / 3)
    assert result.top5_agreement is None  # three classes: top-5 would be 1 by definition
    assert result.float_accuracy == pytest.approx(2 / 3)  # predicts 0, 2, 1
    assert result.int8_accuracy == pytest.approx(2 / 3)  # predicts 0, 1, 0


def test_non_classification_output_has_no_agreement() -> None:
    tally = OutputTally("boxes")
    tally.update(np.ones((4, 1)), np.ones((4, 1)))
    result = tally.result()
    assert result.top1_agreement is None and not result.is_classification
    assert result.sqnr_db == math.inf


def test_user_metric_sees_whole_outputs() -> None:
    seen: list[int] = []

    def rows(reference: np.ndarray, quantized: np.ndarray) -> float:
        seen.append(reference.shape[0])
        return float(np.abs(reference - quantized).sum())

    tally = OutputTally("y", keep=True)
    tally.update(np.zeros((2, 3)), np.ones((2, 3)))
    tally.update(np.zeros((1, 3)), np.ones((1, 3)))
    assert tally.result(named_metrics(rows)).custom == {"rows": 9.0}
    assert seen == [3]


def test_metric_must_be_callable_and_return_a_number() -> None:
    with pytest.raises(ConfigError, match="'metric' must be a callable"):
        named_metrics(3)  # type: ignore[arg-type]
    tally = OutputTally("y", keep=True)
    tally.update(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ConfigError, match="metric 'bad' returned str"):
        tally.result({"bad": lambda r, q: "high"})  # type: ignore[arg-type, return-value]


def test_json_numbers() -> None:
    assert [json_number(v) for v in (1.5, math.inf, -math.inf, None)] == [1.5, "inf", "-inf", None]
    # NaN (an SQNR of 0/0) is its own string, as every JSON eightbit writes spells it.
    assert json_number(math.nan) == json_float(math.nan) == "nan"
