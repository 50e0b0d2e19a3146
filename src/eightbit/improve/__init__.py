"""Steps that bring the int8 network closer to the float one (docs/numerics.md).

One module per step, each named after its function (``from eightbit.improve.weights.equalize
import equalize``):

- ``equalize``: cross-layer equalization and high-bias absorption of the float model;
- ``refine.refine_ranges``: each activation's range chosen by the error it causes;
- ``bias_correction``: the output shift of weight rounding removed;
- ``adaround``, ``fallback``: learned rounding and accuracy-aware fallback
  (docs/numerics.md);
- ``reconstruct``: layer-wise reconstruction of weights and biases (§I.8).

Every step returns its result and a ``StepReport`` (``eightbit.steps``, beside the plan
that records it); ``ImproveConfig`` and the presets ``fast``, ``default``, ``accurate`` say
which run.
"""

from eightbit.improve.presets import PRESETS, ImproveConfig, preset
from eightbit.steps import LayerGain, StepReport

__all__ = ["PRESETS", "ImproveConfig", "LayerGain", "StepReport", "preset"]
