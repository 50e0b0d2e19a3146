"""``default``'s layer-wise reconstruction, run when its rule holds (docs/numerics.md §I.8.3).

With ``ImproveConfig.reconstruct`` left at None, the nearest-rounded model is made and
judged first (bias correction, export, the fallback); then this step decides from its
output SQNR on the calibration samples and the step's predicted arithmetic
(``reconstruct_rule.decide``), and when the rule holds runs the learned stage just as
``reconstruct=True`` does: the weights reconstructed on the final plan, the output layer's
bias corrected, the model exported again; unless the reconstruction lowered the output
SQNR on its samples, when the nearest model stays (eq. I.22). The plan records the step
and why it ran, or why it did not when the output was under the quality level.
"""

from __future__ import annotations

from dataclasses import replace

from eightbit.graph import Graph
from eightbit.improve.weights.layerwise import weight_layers
from eightbit.improve.weights.reconstruct import ReconstructOptions
from eightbit.improve.weights.reconstruct_rule import (
    Decision,
    arithmetic,
    decide,
    declined,
    measured_sqnr,
)
from eightbit.pipeline.stages import BiasCorrection, Export, LearnedWeights
from eightbit.pipeline.state import Settings, State
from eightbit.steps import StepReport


class AutoReconstruct:
    """Reconstruction when ``reconstruct`` is None (``default``) and the rule holds."""

    def applies(self, settings: Settings) -> bool:
        # Fine-tuning learns the weights itself, and from reconstructed ones it ended lower
        # than from nearest rounding (MobileNetV2: 24.3 against 25.6 dB, §I.8.3).
        improve = settings.improve
        return improve.reconstruct is None and not improve.adaround and not improve.finetune

    def run(self, state: State) -> State:
        # ``planned_source``, not ``planned``: a big planned model waits on disk and is
        # read back only if the step runs (§C.11).
        if state.samples is None or state.plan is None or state.planned_source is None:
            return state  # no calibration samples here: nothing to fit the weights to
        decision = _decision(state)
        if not decision.runs:  # recorded only when the output was poor (the user may ask)
            return state.reported(decision.report() if decision.poor else None)
        nearest = state
        state = LearnedWeights().run(state)
        made = state.reports[-1]
        note = f"run by default's rule (§I.8.3): {decision.reason}"
        if _lowered(made):  # eq. I.22: the nearest model stays
            kept = "not kept: it lowered the output SQNR on those samples; nearest rounding kept"
            return nearest.reported(replace(made, notes=(*made.notes, note, kept)))
        state = replace(
            state, reports=(*state.reports[:-1], replace(made, notes=(*made.notes, note)))
        )
        correction = BiasCorrection(learned=True)
        if correction.applies(_learned(state.settings)):
            state = correction.run(state)
        return Export(learned=True).run(state)


def _decision(state: State) -> Decision:
    assert state.plan is not None  # run checked
    sqnr, rival = measured_sqnr(state.reports), state.settings.rival_db
    no = declined(sqnr, rival)  # before the layers are counted: a big model's graph
    if no is not None:
        return no
    # The prepared model has the planned one's layers (bias correction changes biases only).
    layers, _ = weight_layers(Graph(state.prepared), state.plan)
    options = ReconstructOptions()
    samples = min(state.calibrate_count or options.samples, options.samples)
    return decide(sqnr, arithmetic(layers, samples, options), rival)


def _lowered(report: StepReport) -> bool:
    """Whether the step's output SQNR on its samples fell (eq. I.22)."""
    gain = report.gain_db
    return gain is not None and gain < 0.0


def _learned(settings: Settings) -> Settings:
    """``settings`` as with ``reconstruct=True``: what the learned stage's steps read."""
    return replace(settings, improve=replace(settings.improve, reconstruct=True))
