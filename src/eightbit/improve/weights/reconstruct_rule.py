"""When ``default`` reconstructs the weights by itself (docs/numerics.md §I.8.3).

``default`` leaves ``ImproveConfig.reconstruct`` at None: the step then runs when the
nearest-rounded model's output SQNR on the calibration samples is under a quality level
(an error a user would see, eq. I.21) and the step's predicted work stays under a bound
(eq. I.20). The rule reads the model and its samples only, never the clock: the same
model and samples give the same int8 model on any machine, idle or loaded. ``True``
always runs it, ``False`` never (``--preset fast``, ``--no-reconstruct``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from eightbit.improve.weights.adaround_rows import LayerShape
from eightbit.improve.weights.reconstruct import ReconstructOptions, width
from eightbit.steps import StepReport

__all__ = [
    "RECONSTRUCT_BELOW_DB",
    "RECONSTRUCT_MAX_SECONDS",
    "REFERENCE_RATE",
    "ROW_SECONDS",
    "Cost",
    "Decision",
    "arithmetic",
    "decide",
    "measured_sqnr",
]

# Eq. I.21: an output SQNR under 20 dB (an error a tenth of the signal's RMS) is one a user
# sees; §I.9's safety net acts only under 10 dB.
RECONSTRUCT_BELOW_DB = 20.0

# Eq. I.20: the step's predicted seconds on the reference machine (``ROW_SECONDS``,
# ``REFERENCE_RATE``) may be at most this: minutes, not tens of minutes, on a model whose
# output is under the quality level (§I.8.3: the two zoo models it picks predict 46-122 s).
RECONSTRUCT_MAX_SECONDS = 300.0

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


def decide(sqnr_db: float | None, cost: Cost) -> Decision:
    """Eqs. I.20-I.21: run when the output SQNR is under ``RECONSTRUCT_BELOW_DB`` and the
    predicted seconds are at most ``RECONSTRUCT_MAX_SECONDS``."""
    predicted = cost.seconds()
    if sqnr_db is None:
        return Decision(False, "no output SQNR was measured on the calibration samples", predicted)
    if sqnr_db >= RECONSTRUCT_BELOW_DB:
        why = f"output SQNR {sqnr_db:.1f} dB on the calibration samples, at least "
        return Decision(False, f"{why}{RECONSTRUCT_BELOW_DB:g} dB", predicted)
    bound = f"{RECONSTRUCT_MAX_SECONDS:g} s on the reference machine (§I.8.3)"
    if predicted > RECONSTRUCT_MAX_SECONDS:
        return Decision(False, f"predicted {predicted:.0f} s, over {bound}", predicted, poor=True)
    why = (
        f"output SQNR {sqnr_db:.1f} dB on the calibration samples, under "
        f"{RECONSTRUCT_BELOW_DB:g} dB; predicted {predicted:.0f} s, within {bound}"
    )
    return Decision(True, why, predicted, poor=True)
