"""Output metrics float vs int8: agreement, SQNR, cosine similarity, max abs error.

Each function takes the float reference first and the quantized result second, both arrays
of the same shape with samples on the first axis. ``ErrorSums`` accumulates the same
metrics batch by batch, and ``topk_hits``/``correct_predictions`` give the per-sample
results that the agreement and accuracy fractions count. Definitions are in
docs/numerics.md §A.1.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from eightbit.errors import DataError
from eightbit.serialize import json_float


def _pair(reference: ArrayLike, quantized: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(quantized, dtype=np.float64)
    if ref.shape != out.shape:
        raise DataError(
            f"cannot compare outputs of shapes {ref.shape} and {out.shape}; "
            "both models must produce the same output shape for the same inputs"
        )
    return ref, out


def sqnr_from_sums(signal: float, noise: float) -> float:
    """10·log10(signal / noise) in dB from the two sums of squares (eq. A.1).

    +inf when there is no noise; -inf when there is noise but no signal.
    """
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


class ErrorSums:
    """Running sums of Σr², Σo², Σr·o, Σ(r−o)² and max|r−o| over batches (eqs. A.1-A.3).

    The streamed metrics equal the whole-array ones up to the order of float64 additions.
    """

    def __init__(self) -> None:
        self.reference_power = 0.0
        self.quantized_power = 0.0
        self.dot = 0.0
        self.noise_power = 0.0
        self.max_abs = 0.0
        self.count = 0

    def update(self, reference: ArrayLike, quantized: ArrayLike) -> None:
        ref, out = _pair(reference, quantized)
        difference = ref - out
        self.reference_power += float(np.sum(ref * ref))
        self.quantized_power += float(np.sum(out * out))
        self.dot += float(np.sum(ref * out))
        self.noise_power += float(np.sum(difference * difference))
        if difference.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(difference))))
        self.count += ref.size

    def merge(self, batch: ErrorSums) -> None:
        """Fold in the sums of one later batch, with the additions ``update`` makes, so that
        folding per-batch sums in batch order gives the same bits as updating (§S.2)."""
        self.reference_power += batch.reference_power
        self.quantized_power += batch.quantized_power
        self.dot += batch.dot
        self.noise_power += batch.noise_power
        self.max_abs = max(self.max_abs, batch.max_abs)
        self.count += batch.count

    @property
    def sqnr_db(self) -> float:
        return sqnr_from_sums(self.reference_power, self.noise_power)

    @property
    def cosine(self) -> float:
        norms = math.sqrt(self.reference_power) * math.sqrt(self.quantized_power)
        if norms == 0.0:
            return 1.0 if self.reference_power == self.quantized_power == 0.0 else 0.0
        return self.dot / norms


def _summed(reference: ArrayLike, quantized: ArrayLike) -> ErrorSums:
    sums = ErrorSums()
    sums.update(reference, quantized)
    return sums


def sqnr_db(reference: ArrayLike, quantized: ArrayLike) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σ r² / Σ (r − q)²), in dB.

    +inf when the two agree exactly; -inf when the reference is all zero but they differ.
    """
    return _summed(reference, quantized).sqnr_db


def topk_hits(reference: ArrayLike, quantized: ArrayLike, k: int = 1) -> np.ndarray:
    """Per sample: is the float top-1 class among the quantized model's top-k? (bool array)

    Logits are flattened per sample (axis 0 = samples); ties go to the lower class index.
    """
    ref, out = _pair(reference, quantized)
    if ref.ndim < 2 or ref.shape[0] == 0:
        raise DataError(f"top-k agreement needs (samples, classes) outputs; got shape {ref.shape}")
    ref2 = ref.reshape(ref.shape[0], -1)
    out2 = out.reshape(out.shape[0], -1)
    k = min(k, ref2.shape[1])
    want = np.argmax(ref2, axis=1)
    top = np.argsort(-out2, axis=1, kind="stable")[:, :k]
    return np.any(top == want[:, None], axis=1)


def topk_agreement(reference: ArrayLike, quantized: ArrayLike, k: int = 1) -> float:
    """Fraction of samples whose float top-1 class is among the quantized model's top-k.

    For k = 1 this is plain top-1 agreement. Logits are flattened per sample (axis 0 = samples).
    """
    return float(np.mean(topk_hits(reference, quantized, k)))


def correct_predictions(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Per sample: does the arg-max class equal the label? (bool array)"""
    scores = np.asarray(logits)
    truth = np.asarray(labels).reshape(-1)
    if scores.shape[0] != truth.shape[0]:
        raise DataError(
            f"{truth.shape[0]} labels for {scores.shape[0]} samples; give one label per sample"
        )
    predicted = np.argmax(scores.reshape(scores.shape[0], -1), axis=1)
    return np.asarray(predicted == truth)


def accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of samples whose arg-max class equals the label."""
    return float(np.mean(correct_predictions(logits, labels)))


def cosine_similarity(reference: ArrayLike, quantized: ArrayLike) -> float:
    """Cosine of the angle between the two outputs, flattened (1.0 = same direction)."""
    return _summed(reference, quantized).cosine


def max_abs_error(reference: ArrayLike, quantized: ArrayLike) -> float:
    return _summed(reference, quantized).max_abs


def json_number(value: float | None) -> float | str | None:
    """Finite floats as JSON numbers; ±inf and NaN as the strings "inf", "-inf", "nan"
    (strict JSON, the one rule of ``serialize.json_float``); None stays None."""
    return None if value is None else json_float(value)
