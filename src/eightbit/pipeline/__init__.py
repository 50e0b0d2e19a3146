"""``quantize``: the main job, float ONNX model + data -> int8 QDQ model and its plan.

``quantize`` loads and normalizes the model, splits the data into calibration samples and
samples held back for the quick check (``holdout``), then runs the steps of ``steps()``
in order over one ``State`` value (``state``, ``stages``): each step that applies to the
settings takes the state and returns the next one, and the plan records the report of
every step that ran. The quick check judges the int8 model on the held-back samples: top-1
agreement with the original float model, output SQNR and the worst slice (§A.9), so a user
sees at once whether int8 kept the network's behaviour; when it did not (a collapsed slice,
a slice under 10 dB), the safety net runs the fallback (§I.9).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import onnx

from eightbit._io import refuse_overwrite
from eightbit.analysis.outputs import Metric
from eightbit.analysis.quick_check import quick_check
from eightbit.calibrate import CalibrationConfig, ImageOptions, Ranges, open_data
from eightbit.calibrate.data import DataLike
from eightbit.errors import ConfigError
from eightbit.export.qdq import INT16_QDQ_OPSET
from eightbit.graph import Graph, normalize
from eightbit.graph.normalize import PER_CHANNEL_OPSET
from eightbit.graph.quantized import load_float_model
from eightbit.improve.finetune import require_torch_for_finetune
from eightbit.improve.presets import PRESETS, ImproveConfig, preset
from eightbit.improve.weights.adaround import require_torch
from eightbit.pipeline.auto_reconstruct import AutoReconstruct
from eightbit.pipeline.choice import choose_mode, latency_timer, model_evidence
from eightbit.pipeline.dynamic import dynamic_steps
from eightbit.pipeline.holdout import CHECK_SHARE, DEFAULT_CHECK_SAMPLES, split, window
from eightbit.pipeline.judging import Check, SafetyNet
from eightbit.pipeline.stages import (
    BiasCorrection,
    Calibrate,
    Centre,
    ChooseClipping,
    Equalize,
    Export,
    Fallback,
    Finetune,
    LearnedWeights,
    OutlierChannels,
    Plan,
    RefineRanges,
    SmoothQuant,
    SpaceToDepthStem,
    Step,
)
from eightbit.pipeline.state import QuantizedModel, Settings, State
from eightbit.pipeline.tables import Int8Tables
from eightbit.plan import plan_path_for
from eightbit.pytorch import (
    from_torch,
    is_exported_program_file,
    is_torch_data,
    is_torch_model,
    torch_data_for,
)
from eightbit.quant import QuantConfig
from eightbit.safety_net import missed_floor
from eightbit.steps import StepReport

__all__ = [
    "CHECK_SHARE",
    "DEFAULT_CHECK_SAMPLES",
    "QuantizedModel",
    "plan_path_for",
    "quantize",
    "quick_check",
    "save_quantized",
    "steps",
]
_split = split  # the tests' name for it


def steps() -> tuple[Step, ...]:
    """The steps of ``quantize``, in the order they run; each runs when it applies.

    The ordering rule: **the fallback decides on nearest rounding; learned weights come
    after it**, on its final plan. Learned rounding (AdaRound, reconstruction) tunes each
    layer to the error of the layers before it, so returning one of those to float
    afterwards would over-compensate (§R.9). The nearest stage (bias correction, export)
    therefore runs first whenever it is the result or the fallback judges it; the learned
    stage (weights, their bias correction, export) replaces its model. The rest follows the
    data: equalization changes the float model, so it comes before calibration; the plan
    needs the ranges (the whole-model clipping choice comes before the per-tensor
    refinement, which starts from it); centring (§Q16.1) moves the final ranges with
    the model it rewrites, so it comes after both and before the plan; fine-tuning starts
    from the final post-training model, fallback included (§T.5); the quick check needs
    the final model; the safety net reads the check. Embedding tables are stored as int8
    (§D.3) on the model the check judges, and again on a model the safety net rebuilt.
    """
    return (
        SpaceToDepthStem(),
        Equalize(),
        SmoothQuant(),
        OutlierChannels(),
        Calibrate(),
        ChooseClipping(),
        RefineRanges(),
        Centre(),
        Plan(),
        BiasCorrection(learned=False),
        Export(learned=False),
        Fallback(),
        AutoReconstruct(),
        LearnedWeights(),
        BiasCorrection(learned=True),
        Export(learned=True),
        Finetune(),
        Int8Tables(),
        Check(),
        SafetyNet(missed_floor),
        Int8Tables(after_safety_net=True),
    )


def quantize(
    model: str | os.PathLike[str] | onnx.ModelProto | Any,
    data: DataLike | Any | None = None,
    config: QuantConfig | None = None,
    *,
    calibration: CalibrationConfig | None = None,
    ranges: Ranges | None = None,
    image: ImageOptions | None = None,
    check_samples: int | None = None,
    threads: int | None = None,
    progress: bool = False,
    improve: ImproveConfig | str | None = None,
    metric: Metric | None = None,
    ray: str | None = None,
    example_inputs: object = None,
) -> QuantizedModel:
    """Quantize ``model`` to int8 as ``config`` says, calibrating on ``data``.

    ``ranges`` (from ``eightbit calibrate``) skips calibration; ``data`` is then only used
    for the quick check. ``check_samples`` samples at the end of the data are held back
    from calibration for the quick check (default: up to 64, at most a fifth of the data;
    0 disables it). ``improve``: the improvement steps, an ``ImproveConfig`` or a preset
    name (``"fast"``, ``"default"``, ``"accurate"``; None is ``"default"``). ``metric``:
    ``metric(float_output, int8_output)`` for the fallback budget ``max_drop`` instead of
    top-1 agreement. ``ray``: calibrate and score the fallback's candidates on a Ray
    cluster (``"local"`` or its address; docs/distributed.md), with the same result.

    ``model`` may also be a ``torch.nn.Module``, a ``torch.export.ExportedProgram`` or a
    ``.pt2`` file it was saved to; ``data`` a ``DataLoader``, a ``Dataset``, tensors or dicts
    of tensors; ``example_inputs`` the call a module is exported with (default: the first
    batch of ``data``). See ``eightbit.pytorch``.
    """
    config = config or QuantConfig()
    settings = Settings(
        config, _improve_config(improve), calibration or CalibrationConfig(), metric, threads,
        progress, ray,
    )  # fmt: skip
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"'config' must be a QuantConfig (got {type(config).__name__})")
    dynamic = config.mode == "dynamic"
    if config.mode == "auto" and ranges is not None:
        config = dataclasses.replace(config, mode="static")  # ranges: a static model
        settings = dataclasses.replace(settings, config=config)
    if data is None and ranges is None and not dynamic:
        raise ConfigError(
            "quantize needs calibration data, or ranges from eightbit calibrate "
            "(or mode 'dynamic', which needs none)"
        )
    if dynamic and ranges is not None:
        raise ConfigError("mode 'dynamic' quantizes activations at run time: give no ranges")
    if dynamic:
        _refuse_static_training(settings.improve)
    _require_steps(settings.improve, data, ranges is not None)
    _require_float_kernels(config, settings.improve)
    settings = dataclasses.replace(
        settings, improve=_weights_for_promotion(config, settings.improve)
    )
    exported, data, reports = _front_end(model, data, example_inputs)
    # Normalizing copies the model; a model quantized once lets go of it as read, so a big
    # model's weights are not held twice through every step (issue 20).
    held = [exported]
    evidence = model_evidence(exported) if config.mode == "auto" else None
    timer = None if evidence is None else latency_timer(exported, data, image)
    del exported

    def run(chosen: QuantConfig, rival_db: float | None = None) -> Staged:
        concrete = dataclasses.replace(settings, config=chosen, rival_db=rival_db)
        owned = evidence is None  # no second run reads the model: it is given up
        read = held.pop() if owned else held[0]
        state = _start(read, data, ranges, image, check_samples, concrete, owned=owned)
        del read
        every = dynamic_steps() if chosen.mode == "dynamic" else steps()
        net = next((i for i, step in enumerate(every) if isinstance(step, SafetyNet)), len(every))
        staged = Staged(dataclasses.replace(state, reports=reports), concrete, every[net:])
        del state
        staged.advance(every[:net])
        return staged

    if config.mode == "auto":
        held_back = check_samples != 0  # an explicit 0: nothing to judge the modes on
        return choose_mode(evidence, config, settings.improve, run, timer, held_back=held_back)
    return run(config).finish()


class Staged:
    """One quantize run, stopped before its safety net (§D.6): ``before_net`` is the model
    the net would judge, ``finish`` runs the net and the steps after it."""

    def __init__(self, state: State, settings: Settings, rest: tuple[Step, ...]) -> None:
        self._handed = [state]
        self.settings, self.rest = settings, rest

    def advance(self, steps: tuple[Step, ...]) -> None:
        # Each state is handed to its step, not kept here: a step may then let go of what
        # the state held (a big model's weights while a session holds its own, §C.11).
        for step in steps:
            if step.applies(self.settings):
                self._handed.append(step.run(self._handed.pop()))

    def before_net(self) -> QuantizedModel:
        return self._handed[0].result()

    def finish(self) -> QuantizedModel:
        self.advance(self.rest)
        self.rest = ()
        return self._handed.pop().result()


def _front_end(
    model: Any, data: Any, example_inputs: object
) -> tuple[onnx.ModelProto, Any, tuple[StepReport, ...]]:
    """The float ONNX model, the data as arrays, and the report of a PyTorch export."""
    if is_torch_model(model) or is_exported_program_file(model):
        made = from_torch(model, data, example_inputs)
        return made.model, made.data, (made.report,)
    if example_inputs is not None:
        raise ConfigError("example_inputs is for a PyTorch model; this model is ONNX")
    exported = load_float_model(model)
    return exported, torch_data_for(exported, data) if is_torch_data(data) else data, ()


def _start(
    exported: onnx.ModelProto,
    data: DataLike | None,
    ranges: Ranges | None,
    image: ImageOptions | None,
    check_samples: int | None,
    settings: Settings,
    *,
    owned: bool = False,
) -> State:
    """The state before any step: the model normalized, the data opened and split.

    ``owned``: the caller gives ``exported`` up; it is then normalized in place unless it
    is kept (bias correction without samples reads its BatchNormalization statistics)."""
    # int16 tensors need opset 21 (§Q17): the plan is made from the model at that opset, so
    # the export does not have to upgrade it (the converter adds nodes the plan never saw).
    opset = INT16_QDQ_OPSET if settings.config.int16 else PER_CHANNEL_OPSET
    keeps = data is None or ranges is not None  # no samples: ``State.exported`` is kept
    float_model = normalize(exported, min_opset=opset, in_place=owned and not keeps)
    calibration = settings.calibration
    source = None
    if data is not None:
        source = open_data(
            data,
            Graph(float_model).inputs,
            batch_size=calibration.batch_size,
            image=image,
            skip_nonfinite=calibration.skip_nonfinite,
        )
    calibrate_count, check_count = split(source, calibration, check_samples, ranges is None)
    # The steps learn from the calibration samples only; the held-back ones stay unseen.
    samples = None if source is None or ranges is not None else window(source, 0, calibrate_count)
    kept = exported if samples is None else None  # only bias correction without data reads it
    return State(
        settings, kept, float_model, source, samples, calibrate_count, check_count,
        given_ranges=ranges is not None, prepared=float_model, ranges=ranges, data=data,
        image=image,
    )  # fmt: skip


def _improve_config(improve: ImproveConfig | str | None) -> ImproveConfig:
    if improve is None:
        return PRESETS["default"]
    if isinstance(improve, str):
        return preset(improve)
    if not isinstance(improve, ImproveConfig):
        raise ConfigError(
            f"'improve' must be an ImproveConfig or a preset name {list(PRESETS)} "
            f"(got {type(improve).__name__})"
        )
    return improve


def _require_steps(improve: ImproveConfig, data: DataLike | None, given_ranges: bool) -> None:
    """Refuse, before any work, the steps that cannot run here."""
    if improve.adaround:
        require_torch()
    if improve.finetune:
        require_torch_for_finetune()
    for wanted, flag in (
        (improve.adaround, "--adaround"),
        (improve.finetune, "--finetune"),
        (improve.reconstruct, "--reconstruct"),
        (improve.fallback, "--max-drop/--min-sqnr"),
    ):
        if wanted and (data is None or given_ranges):
            raise ConfigError(
                f"{flag} needs calibration samples: give --data, and calibrate here rather "
                "than with --ranges (which holds all the data back for the check)"
            )


def _refuse_static_training(improve: ImproveConfig) -> None:
    """Learned rounding and fine-tuning train on the static activation grids; dynamic mode
    has none (its activations are quantized at run time), so asking for them is an error,
    not a step silently skipped. (A preset's other static steps are simply not dynamic
    mode's steps, §D.)"""
    for wanted, flag in ((improve.adaround, "--adaround"), (improve.finetune, "--finetune")):
        if wanted:
            raise ConfigError(
                f"{flag} trains on the static activation grids, and mode 'dynamic' quantizes "
                "activations at run time: use --mode static (or leave the mode automatic)"
            )


def _weights_for_promotion(config: QuantConfig, improve: ImproveConfig) -> ImproveConfig:
    """On a target without float kernels, a budget is met by int16 promotion alone, which
    cannot reduce the int8 weights' own error (§R.11): there the weights are reconstructed
    (§I.8) too, unless the user chose how they are learned."""
    learned = improve.adaround or improve.reconstruct is True or improve.finetune
    if improve.fallback and not config.profile.float_nodes and not learned:
        return dataclasses.replace(improve, reconstruct=True)
    return improve


def _require_float_kernels(config: QuantConfig, improve: ImproveConfig) -> None:
    """Refuse a budget on a target with neither float kernels nor 16-bit activations: there
    the search can neither return nodes to float nor promote tensors to int16 (§R.11)."""
    profile = config.profile
    if improve.fallback and not profile.float_nodes and not profile.int16_activations:
        rule = config.profile.rules["float_nodes"]
        raise rule.refuse(
            config.target,
            "--max-drop/--min-sqnr (they return nodes to float)",
            "drop the budget, or try --preset accurate for a better int8 model",
        )


def save_quantized(
    result: QuantizedModel, output: str | os.PathLike[str], *inputs: str | os.PathLike[str]
) -> Path:
    """``result.save(output)`` after refusing to overwrite any of ``inputs``."""
    refuse_overwrite(output, *inputs)
    refuse_overwrite(plan_path_for(output), *inputs)
    return result.save(output)
