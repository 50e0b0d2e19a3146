"""Output metrics float vs int8: agreement, SQNR, cosine similarity, max abs error.

Each function takes the float reference first and the quantized result second, both arrays
of the same shape with samples on the first axis. Definitions are in docs/numerics.md.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from eightbit.errors import DataError


def _pair(reference: ArrayLike, quantized: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(quantized, dtype=np.float64)
    if ref.shape != out.shape:
        raise DataError(
            f"cannot compare outputs of shapes {ref.shape} and {out.shape}; "
            "both models must produce the same output shape for the same inputs"
        )
    return ref, out


def sqnr_db(reference: ArrayLike, quantized: ArrayLike) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σ r² / Σ (r − q)²), in dB.

    +inf when the two agree exactly; -inf when the reference is all zero but they differ.
    """
    ref, out = _pair(reference, quantized)
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def topk_agreement(reference: ArrayLike, quantized: ArrayLike, k: int = 1) -> float:
    """Fraction of samples whose float top-1 class is among the quantized model's top-k.

    For k = 1 this is plain top-1 agreement. Logits are flattened per sample (axis 0 = samples).
    """
    ref, out = _pair(reference, quantized)
    if ref.ndim < 2 or ref.shape[0] == 0:
        raise DataError(f"top-k agreement needs (samples, classes) outputs; got shape {ref.shape}")
    ref2 = ref.reshape(ref.shape[0], -1)
    out2 = out.reshape(out.shape[0], -1)
    k = min(k, ref2.shape[1])
    want = np.argmax(ref2, axis=1)
    top = np.argsort(-out2, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == want[:, None], axis=1)))


def accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of samples whose arg-max class equals the label."""
    scores = np.asarray(logits)
    truth = np.asarray(labels).reshape(-1)
    if scores.shape[0] != truth.shape[0]:
        raise DataError(
            f"{truth.shape[0]} labels for {scores.shape[0]} samples; give one label per sample"
        )
    predicted = np.argmax(scores.reshape(scores.shape[0], -1), axis=1)
    return float(np.mean(predicted == truth))


def cosine_similarity(reference: ArrayLike, quantized: ArrayLike) -> float:
    """Cosine of the angle between the two outputs, flattened (1.0 = same direction)."""
    ref, out = _pair(reference, quantized)
    norms = float(np.linalg.norm(ref)) * float(np.linalg.norm(out))
    if norms == 0.0:
        return 1.0 if not np.any(ref) and not np.any(out) else 0.0
    return float(np.dot(ref.ravel(), out.ravel()) / norms)


def max_abs_error(reference: ArrayLike, quantized: ArrayLike) -> float:
    ref, out = _pair(reference, quantized)
    return float(np.max(np.abs(ref - out))) if ref.size else 0.0
