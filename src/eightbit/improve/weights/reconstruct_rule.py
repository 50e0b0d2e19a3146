"""When ``default`` reconstructs the weights by itself (docs/numerics.md §I.8.3).

``default`` leaves ``ImproveConfig.reconstruct`` at None: the step then runs when the
nearest-rounded model's output SQNR on the calibration samples is under a quality level
(an error the step can still reduce, eq. I.21) and the step's predicted work stays under a
bound that shrinks as that SQNR rises (eq. I.20); its result is kept only when it did not
lower that SQNR (eq. I.22). The rule reads the model and its samples only, never the
clock: the same model and samples give the same int8 model on any machine, idle or
loaded. ``True`` always runs it, ``False`` never (``--preset fast``, ``--no-reconstruct``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from eightbit.improve.weights.adaround_rows import LayerShape
from eightbit.improve.weights.reconstruct import ReconstructOptions, width
from eightbit.steps import StepReport

__all__ = [
    "BUDGET_HALVES_EVERY_DB",
    "FULL_BUDGET_BELOW_DB",
    "OUT_OF_REACH_DB",
    "RECONSTRUCT_BELOW_DB",
    "RECONSTRUCT_MAX_SECONDS",
    "REFERENCE_RATE",
    "ROW_SECONDS",
    "Cost",
    "Decision",
    "arithmetic",
    "decide",
    "declined",
    "measured_sqnr",
    "work_bound",
]

# Eq. I.21: under 40 dB (an error a hundredth of the signal's RMS) every zoo model measured
# gained from the step on its evaluation samples, from +0.3 dB at 38 dB to +10 dB at 27 dB
# (§I.8.3); a model already above it has little left to gain.
RECONSTRUCT_BELOW_DB = 40.0

# Eq. I.20: the step's predicted seconds on the reference machine (``ROW_SECONDS``,
# ``REFERENCE_RATE``) may be at most this on an output under ``FULL_BUDGET_BELOW_DB``:
# minutes, not tens of minutes, for an error a user sees.
RECONSTRUCT_MAX_SECONDS = 300.0
FULL_BUDGET_BELOW_DB = 20.0

# Eq. I.20: above ``FULL_BUDGET_BELOW_DB`` the bound halves with every this many dB (150 s
# at 30 dB, 75 s at 40): the better the output already is, the less time the step may
# take. A smooth bound, so that no SQNR level splits a family in two (§I.8.3).
BUDGET_HALVES_EVERY_DB = 10.0

# Eq. I.23: in auto mode (§D.6) static's reconstruction is not run when dynamic mode's model
# already leads static's nearest one by this much: the step gained 1.0 dB (MiniLM) and
# 1.5 dB (ViT-S) on the zoo's transformers in static mode, so it cannot change the choice.
OUT_OF_REACH_DB = 3.0

# Eq. I.20's cost of one row of one layer (reading it through the QDQ network, im2col, the
# float layer's miss, trimming, the sums): 0.026-0.032 s per layer and sample of 128 rows
# on the zoo's MobileNetV2, PP-OCRv3 detector and YOLOX, 2 loaded cores (§I.8.3). A
# faster machine runs the step faster; the prediction is in that machine's seconds.
ROW_SECONDS = 2.5e-4

# Eq. I.20's float64 operations a second of the reference machine (a 512x512 product
# measured 0.8-3.9e10 a second there): the low end, as its loaded cores ran the step.
REFERENCE_RATE = 1e10


@dataclass(frozen=True)
class Decision:
    """Whether the step runs, why, and the figures the reason names. ``poor``: the output
    SQNR was under the quality level (the step was wanted, whether or not it runs)."""

    runs: bool
    reason: str
    predicted_seconds: float
    poor: bool = False

    def report(self) -> StepReport:
        """The plan's record of a step that was wanted and did not run."""
        return StepReport("reconstruct", 0.0, None, None, notes=(f"skipped: {self.reason}",))


def measured_sqnr(reports: Sequence[StepReport]) -> float | None:
    """The latest output SQNR a step measured on the calibration samples, or None."""
    for report in reversed(reports):
        if report.after_db is not None and math.isfinite(report.after_db):
            return report.after_db
    return None


@dataclass(frozen=True)
class Cost:
    """What eq. I.20 counts of the step: its ``rows`` (layers × rows a layer) and the
    floating-point ``operations`` of its sums and solves."""

    rows: float
    operations: float

    def seconds(self) -> float:
        """Predicted seconds of the step on the reference machine (I.20)."""
        return ROW_SECONDS * self.rows + self.operations / REFERENCE_RATE


def arithmetic(layers: Sequence[LayerShape], samples: int, options: ReconstructOptions) -> Cost:
    """The step's cost (eq. I.20): ``M`` rows for each layer reconstructed, at most
    ``rows_per_sample`` a sample (an upper bound: a small feature map has fewer
    positions), and its sums ``G·(K+1)²·M`` and inverse and Cholesky factor
    ``2·G·(K+1)³``; a layer over ``max_width`` only has its float rows drawn."""
    rows = samples * options.rows_per_sample
    kept = [layer for layer in layers if width(layer) <= options.max_width]
    operations = sum(
        layer.groups * (width(layer) + 1) ** 2 * (rows + 2 * (width(layer) + 1)) for layer in kept
    )
    return Cost(rows=float(rows * len(kept)), operations=float(operations))


def decide(sqnr_db: float | None, cost: Cost, rival_db: float | None = None) -> Decision:
    """Eqs. I.20-I.23: run when the output SQNR is under ``RECONSTRUCT_BELOW_DB``, the
    predicted seconds are within the bound for that SQNR (``work_bound``), and ``rival_db``
    (auto mode's dynamic model, if known) leads by less than ``OUT_OF_REACH_DB``."""
    predicted = cost.seconds()
    no = declined(sqnr_db, rival_db, predicted)
    if no is not None:
        return no
    assert sqnr_db is not None  # ``declined`` answers when it is None
    if cost.rows == 0:  # every layer over ``max_width`` (or none): passes for nothing
        return Decision(False, "no layer it can reconstruct (§I.8.2)", predicted, poor=True)
    bound = work_bound(sqnr_db)
    within = f"{bound:.0f} s on the reference machine for an output of {sqnr_db:.1f} dB (§I.8.3)"
    if predicted > bound:
        return Decision(False, f"predicted {predicted:.0f} s, over {within}", predicted, poor=True)
    why = (
        f"output SQNR {sqnr_db:.1f} dB on the calibration samples, under "
        f"{RECONSTRUCT_BELOW_DB:g} dB; predicted {predicted:.0f} s, within {bound:.0f} s on "
        f"the reference machine (§I.8.3)"
    )
    return Decision(True, why, predicted, poor=True)


def declined(
    sqnr_db: float | None, rival_db: float | None = None, predicted: float = math.nan
) -> Decision | None:
    """Eqs. I.21 and I.23 alone: the decision when the output's SQNR already says no (no
    SQNR, at least ``RECONSTRUCT_BELOW_DB``, or a rival out of reach), else None; so the
    caller need not count the step's layers (``predicted``: their cost, when counted)."""
    if sqnr_db is None:
        return Decision(False, "no output SQNR was measured on the calibration samples", predicted)
    if sqnr_db >= RECONSTRUCT_BELOW_DB:
        why = f"output SQNR {sqnr_db:.1f} dB on the calibration samples, at least "
        return Decision(False, f"{why}{RECONSTRUCT_BELOW_DB:g} dB", predicted)
    if rival_db is not None and rival_db - sqnr_db >= OUT_OF_REACH_DB:
        why = (
            f"dynamic mode reached {rival_db:.1f} dB, {rival_db - sqnr_db:.1f} dB over this "
            f"model's {sqnr_db:.1f} dB: more than the step gains on a transformer (§I.8.3)"
        )
        return Decision(False, why, predicted, poor=True)
    return None


def work_bound(sqnr_db: float) -> float:
    """Eq. I.20's bound in seconds on the reference machine for an output of ``sqnr_db``."""
    above = max(0.0, sqnr_db - FULL_BUDGET_BELOW_DB)
    return RECONSTRUCT_MAX_SECONDS * 0.5 ** (above / BUDGET_HALVES_EVERY_DB)
