"""The slice floor every output must reach (docs/numerics.md §I.9), and the score that
reads it: what the safety net's fallback and the clipping choice (§I.10) both compare."""

from __future__ import annotations

import math

import numpy as np

from eightbit.analysis.metrics import sqnr_db
from eightbit.analysis.slices import slice_verdict

# The worst slice of every output must reach this SQNR (§I.9): 10 dB is an error of a
# third of the signal's RMS, where a detector's scores or a regressor's values are still
# ordered as in float; the target for every zoo model is the same 10 dB.
SAFETY_FLOOR_DB = 10.0


def floor_metric(reference: np.ndarray, quantized: np.ndarray) -> float:
    """The worst slice's SQNR, capped at the floor (so the float model scores the floor and
    a drop of 0 means "at the floor or above"); -inf for a collapse."""
    verdict = slice_verdict(reference, quantized)
    if verdict is None:  # no axis but the samples: the whole output is its only slice
        return min(sqnr_db(reference, quantized), SAFETY_FLOOR_DB)
    if verdict.has_collapse:
        return -math.inf
    return min(verdict.worst_sqnr_db, SAFETY_FLOOR_DB)
