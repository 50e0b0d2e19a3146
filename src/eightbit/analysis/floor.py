"""The slice floor every output must reach (docs/numerics.md §I.9), and the score that
reads it: what the safety net's fallback and the clipping choice (§I.10) both compare."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from eightbit.analysis.metrics import sqnr_db
from eightbit.analysis.slices import SAFETY_FLOOR_DB, Probability, slice_verdict

__all__ = ["SAFETY_FLOOR_DB", "floor_metric"]


def floor_metric(
    reference: np.ndarray,
    quantized: np.ndarray,
    probabilities: Sequence[Probability] = (),
    spatial: Sequence[int] = (),
) -> float:
    """The worst slice's SQNR, capped at the floor (so the float model scores the floor and
    a drop of 0 means "at the floor or above"); -inf for a collapse. Silent probability
    slices (A.11) and slices along ``spatial`` axes (a map's rows and columns) are not
    judged."""
    verdict = slice_verdict(reference, quantized, probabilities=probabilities, spatial=spatial)
    if verdict is None:  # no axis but the samples: the whole output is its only slice
        return min(sqnr_db(reference, quantized), SAFETY_FLOOR_DB)
    if verdict.has_collapse:
        return -math.inf
    return min(verdict.worst_sqnr_db, SAFETY_FLOOR_DB)
