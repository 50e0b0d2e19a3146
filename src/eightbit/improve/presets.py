"""``ImproveConfig``: which improvement steps run, and the named presets.

Presets (``eightbit quantize --preset``; their one-line help is ``PRESET_DESCRIPTIONS``).
What they measure is in docs/numerics.md §I.6 and
benchmarks/RESULTS.md#improvement-steps-on-mobilenetv2-400-evaluation-crops-presets-vs-nncf


- ``fast``: calibration and planning only, no step: the quickest int8 model, with no
  protection against collapse (joins of different ranges stay int8, no safety net); the
  quick check still reports a collapse as an error.
- ``default``: cross-layer equalization, the whole model's clipping choice (calibrated
  ranges or the observed extremes, §I.10; a milder percentile too where the output joins
  parts, judged on the worst part, §I.10.1), then bias correction kept where it raised the
  output SQNR on calibration samples. Both cost one or two passes over a few dozen samples.
  When the output SQNR on calibration samples is still under ``RECONSTRUCT_BELOW_DB`` (an
  error the step can reduce) and the step's predicted work is within
  ``RECONSTRUCT_MAX_SECONDS``, the layer-wise reconstruction of the weights runs too, kept
  when it does not lower that SQNR (§I.8.3; ``reconstruct=False`` turns it off).
  Wide joins and probabilities after the last heavy op stay float (§Q13, §Q13.1), and the
  safety net (§I.9) runs the fallback when the quick check finds a collapse or a slice
  under ``SAFETY_FLOOR_DB``.
- ``accurate``: equalization, the clipping choice, per-tensor range refinement, layer-wise
  reconstruction of the weights (§I.8, numpy only), then bias correction of the output
  layer; the slowest preset.
- ``finetune``: the default without its reconstruction rule, then quantization-aware
  fine-tuning by distillation (§T.5, ``--finetune``, needs PyTorch; static mode only).

``--max-drop``/``--min-sqnr`` (accuracy-aware fallback) combine with any preset.
``--adaround`` (learned rounding, needs PyTorch) replaces the reconstruction where asked;
it is slower than the reconstruction and no better on MobileNetV2 (§I.6), so no preset runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from eightbit.analysis.outputs import Metric
from eightbit.errors import ConfigError
from eightbit.improve.budget import Budget, check_limits
from eightbit.serialize import from_dict, to_dict
from eightbit.validators import require_bool, require_int

DEFAULT_ADAROUND_ITERS = 1000
DEFAULT_FINETUNE_STEPS = 250  # improve.finetune reads it from here: one number


@dataclass(frozen=True)
class ImproveConfig:
    """The improvement steps of ``quantize`` (docs/numerics.md).

    - ``equalize``: cross-layer equalization of the float model before calibration.
    - ``choose_clipping``: the calibrated ranges or the observed extremes for the whole
      model, whichever gives the better output on calibration samples (§I.10).
    - ``refine_ranges``: per-tensor range choice among the calibration methods.
    - ``adaround``: learned rounding of the weights, ``adaround_iters`` steps per layer.
    - ``reconstruct``: layer-wise reconstruction of weights and biases (least squares on
      the quantized network's inputs, GPTQ rounding; numpy only). It chooses the weights
      as ``adaround`` does: at most one of the two. True always runs it, False never,
      None when default's rule holds: the nearest model's output SQNR on calibration
      samples under ``RECONSTRUCT_BELOW_DB`` and the step's predicted work within
      ``RECONSTRUCT_MAX_SECONDS`` on the reference machine (§I.8.3).
    - ``bias_correction``: True always applies it, False never, None keeps it where it
      raised the output SQNR on calibration samples.
    - ``max_drop`` / ``min_sqnr``: the accuracy budget for returning layers to float
      (either, both, or neither): the largest drop of top-1 agreement (a fraction, or of
      a user metric when ``quantize`` is given one), the least SQNR (dB) of the first output.
    - ``max_latency``: the largest int8/float latency ratio (one thread, batch 1) the
      fallback may reach: a node whose return to float would pass it is left in int8 and
      the next one tried (§R.9). Needs ``max_drop`` or ``min_sqnr``.
    - ``separate_joins``: keep float a Concat/Add/Sub after the last heavy op whose inputs'
      ranges differ by more than 16x, and the cheap nodes after it (§Q13); and a
      probability op (Sigmoid, Softmax) there with the nodes after it (§Q13.1).
    - ``smooth_quant``: SmoothQuant (§I.11): a LayerNorm output's outlier channels
      migrated into the weights of the matrix products that read it, the strength chosen
      per tensor on calibration samples; nothing happens on a model without such tensors.
    - ``outlier_channels``: the 1-4 output channels of a matrix product over sequences
      that are many times wider than the rest computed by a matrix product of their own
      (§I.12), so the rest keep a fine int8 grid; nothing happens on a CNN.
    - ``centre``: on a target with symmetric affine activations (``tensorrt``), shift each
      non-negative tensor that only unpadded Convs read to the middle of its range, the
      same function with the bit the symmetric grid would lose (§Q16.1); nothing happens on
      other targets.
    - ``finetune``: quantization-aware fine-tuning by distillation (§T.5, needs PyTorch),
      at most ``finetune_steps`` batches, after the post-training steps; kept only when
      the exported model is better on samples held back from training.
    - ``safety_net``: when the quick check finds a collapsed slice or a worst-slice SQNR
      under ``SAFETY_FLOOR_DB`` and no budget was given, run the fallback by itself,
      capped at ONNX Runtime's own int8 latency (§I.9).
    """

    equalize: bool = True
    choose_clipping: bool = True
    refine_ranges: bool = False
    adaround: bool = False
    adaround_iters: int = DEFAULT_ADAROUND_ITERS
    reconstruct: bool | None = None
    bias_correction: bool | None = None
    max_drop: float | None = None
    min_sqnr: float | None = None
    max_latency: float | None = None
    separate_joins: bool = True
    safety_net: bool = True
    smooth_quant: bool = True
    outlier_channels: bool = True
    centre: bool = True
    finetune: bool = False
    finetune_steps: int = DEFAULT_FINETUNE_STEPS

    def __post_init__(self) -> None:
        for name in (
            "equalize",
            "choose_clipping",
            "refine_ranges",
            "adaround",
            "separate_joins",
            "safety_net",
            "smooth_quant",
            "outlier_channels",
            "centre",
            "finetune",
        ):
            require_bool(name, getattr(self, name))
        if self.bias_correction is not None and not isinstance(self.bias_correction, bool):
            raise ConfigError(
                f"'bias_correction' must be True, False or None (where it helps) "
                f"(got {self.bias_correction!r})"
            )
        if self.reconstruct is not None and not isinstance(self.reconstruct, bool):
            raise ConfigError(
                f"'reconstruct' must be True, False or None (when default's rule holds) "
                f"(got {self.reconstruct!r})"
            )
        if self.adaround and self.reconstruct:
            raise ConfigError(
                "'adaround' and 'reconstruct' both choose the weights: enable one of them "
                "(--adaround or --reconstruct, not both)"
            )
        require_int("adaround_iters", self.adaround_iters, 1)
        require_int("finetune_steps", self.finetune_steps, 1)
        check_limits(self.max_drop, self.min_sqnr, self.max_latency)
        if self.max_latency is not None and not self.fallback:
            raise ConfigError(
                "'max_latency' limits the fallback to float, which runs only for a budget: "
                "give 'max_drop' or 'min_sqnr' too"
            )

    @property
    def fallback(self) -> bool:
        return self.max_drop is not None or self.min_sqnr is not None

    def budget(self, metric: Metric | None = None) -> Budget:
        """The fallback's budget (``fallback`` must be True), read by ``metric`` if given."""
        return Budget(self.max_drop, self.min_sqnr, metric, self.max_latency)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImproveConfig:
        return from_dict(cls, "improve config", data)


PRESETS: Mapping[str, ImproveConfig] = {
    "fast": ImproveConfig(
        equalize=False,
        reconstruct=False,
        choose_clipping=False,
        refine_ranges=False,
        bias_correction=False,
        separate_joins=False,
        safety_net=False,
        smooth_quant=False,
        outlier_channels=False,
        centre=False,
    ),
    "default": ImproveConfig(),
    "accurate": ImproveConfig(equalize=True, refine_ranges=True, reconstruct=True),
    "finetune": ImproveConfig(finetune=True),
}

# One line per preset: the help text of ``eightbit quantize --preset`` is built from these,
# so it names what ``PRESETS`` runs (tests/improve/test_presets.py checks both agree).
PRESET_DESCRIPTIONS: Mapping[str, str] = {
    "fast": "no improvement step, joins kept int8, no safety net",
    "default": (
        "equalization, the clipping choice, then bias correction where it helps; layer-wise "
        "reconstruction of the weights when the output SQNR stays under 40 dB and it is "
        "predicted to take at most 5 minutes (less, the better the output); joins of very "
        "different ranges kept float after the last heavy op; the safety net"
    ),
    "accurate": (
        "equalization, the clipping choice, range refinement, layer-wise reconstruction of "
        "the weights in numpy, bias correction; slowest"
    ),
    "finetune": (
        "equalization, the clipping choice, bias correction where it helps, then "
        "quantization-aware fine-tuning by distillation (needs PyTorch), kept only when "
        "better on samples held back from it"
    ),
}


def preset(name: str, **overrides: Any) -> ImproveConfig:
    """The preset ``name`` with the fields in ``overrides`` (those not None) replaced."""
    if name not in PRESETS:
        raise ConfigError(f"'preset' must be one of {list(PRESETS)} (got {name!r})")
    changes = {key: value for key, value in overrides.items() if value is not None}
    # Both choose the weights: asking for one replaces the preset's other.
    for wanted, other in (("adaround", "reconstruct"), ("reconstruct", "adaround")):
        if changes.get(wanted) and other not in changes:
            changes[other] = False
    known = {field.name for field in fields(ImproveConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"unknown improve option(s) {unknown}; expected {sorted(known)}")
    return replace(PRESETS[name], **changes)
