import math

import numpy as np
import pytest

from eightbit.analysis.metrics import (
    accuracy,
    cosine_similarity,
    max_abs_error,
    sqnr_db,
    topk_agreement,
)
from eightbit.errors import DataError


def test_sqnr_hand_computed() -> None:
    # signal 1² + 2² = 5, noise 0.1² + 0.2² = 0.05 -> 10·log10(100) = 20 dB
    assert sqnr_db([1.0, 2.0], [1.1, 1.8]) == pytest.approx(20.0)
    assert sqnr_db([1.0, 2.0], [1.0, 2.0]) == math.inf


def test_topk_agreement_hand_computed() -> None:
    ref = np.array([[3, 2, 1], [1, 2, 3], [1, 3, 2]], dtype=float)
    out = np.array([[3, 2, 1], [1, 3, 2], [3, 1, 2]], dtype=float)
    assert topk_agreement(ref, out, 1) == pytest.approx(1 / 3)
    # sample 2: float class 2 is second in out; sample 3: float class 1 is third
    assert topk_agreement(ref, out, 2) == pytest.approx(2 / 3)
    assert topk_agreement(ref, out, 5) == 1.0


def test_accuracy_and_label_count() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(logits, [1, 0, 0]) == pytest.approx(2 / 3)
    with pytest.raises(DataError, match="2 labels for 3 samples"):
        accuracy(logits, [1, 0])


def test_cosine_and_max_abs() -> None:
    assert cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine_similarity([1, 2], [2, 4]) == pytest.approx(1.0)
    assert max_abs_error([1, 2, 3], [1, 2.5, 2]) == pytest.approx(1.0)


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="shapes"):
        sqnr_db(np.zeros((2, 3)), np.zeros((3, 2)))
