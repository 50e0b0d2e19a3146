"""The steps of ``quantize``, each a value with ``applies(settings)`` and ``run(state)``.

The order they run in, and why, is written once: ``eightbit.pipeline.steps``. A step the
user asked for that cannot run here (ranges from a file, so no calibration samples) says so
in a report rather than being left out silently.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import onnx

from eightbit.calibrate import DataSource, Ranges, calibrate, open_data
from eightbit.calibrate.data import Batch
from eightbit.distributed import RayScore, calibrate_on_ray
from eightbit.errors import ConfigError
from eightbit.export import to_qdq
from eightbit.graph import Graph
from eightbit.graph.session import through_file
from eightbit.graph.stem import space_to_depth_stems
from eightbit.improve.centre import centre_activations
from eightbit.improve.clipping_choice import choose_clipping, scoring_samples
from eightbit.improve.finetune import FinetuneOptions, finetune
from eightbit.improve.float_pass import (
    FloatTap,
    SharedFloat,
    layer_inputs,
    shares_float_pass,
)
from eightbit.improve.outlier_channels import split_outlier_channels
from eightbit.improve.refine import refine_ranges
from eightbit.improve.smoothquant import smooth_quant
from eightbit.improve.weights.adaround import AdaRoundOptions, adaround
from eightbit.improve.weights.bias_correction import (
    DEFAULT_SAMPLES as CORRECTION_SAMPLES,
)
from eightbit.improve.weights.bias_correction import batchnorm_statistics, bias_correction
from eightbit.improve.weights.equalize import equalize
from eightbit.improve.weights.reconstruct import reconstruct
from eightbit.pipeline.gate import keep_if_better
from eightbit.pipeline.holdout import window
from eightbit.pipeline.state import Settings, SpilledModel, State
from eightbit.plan import activation_tensors_to_calibrate, make_plan, rebias
from eightbit.rebuild import (
    EVALUATION_BATCH,
    Prepared,
    promote_after_fallback,
    run_fallback,
    run_promotion,
)
from eightbit.steps import StepReport


class Step(Protocol):
    """One step of ``quantize``: whether it runs for these settings, and what it does."""

    def applies(self, settings: Settings) -> bool: ...

    def run(self, state: State) -> State: ...


class SpaceToDepthStem:
    """``QuantConfig.space_to_depth_stem``: strided stem Convs as SpaceToDepth + Conv."""

    def applies(self, settings: Settings) -> bool:
        return settings.config.space_to_depth_stem

    def run(self, state: State) -> State:
        started = time.perf_counter()
        rewritten, names = space_to_depth_stems(state.prepared)
        if not names:
            return state
        note = (
            f"{len(names)} strided Conv(s) on a graph input rewritten as SpaceToDepth + "
            f"stride-1 Conv (same integers, faster int8 kernels): {', '.join(names)}"
        )
        seconds = time.perf_counter() - started
        report = StepReport("space_to_depth_stem", seconds, None, None, (), (note,))
        return state.reported(report, prepared=rewritten)


class Equalize:
    """Cross-layer equalization of the float model, before it is calibrated."""

    def applies(self, settings: Settings) -> bool:
        return settings.improve.equalize

    def run(self, state: State) -> State:
        if state.given_ranges:
            why = "the ranges from a file describe the model as is"
            return state.reported(_skipped("equalize", why))
        settings = state.settings
        model, report = equalize(
            state.prepared, state.samples, settings.config, threads=settings.threads
        )
        return state.reported(report, prepared=model)


class SmoothQuant:
    """SmoothQuant (§I.11): LayerNorm outputs' outlier channels moved into the weights of
    the matrix products that read them, before calibration. Silent on a model without
    such a tensor (a CNN), so its plan is as it was."""

    def applies(self, settings: Settings) -> bool:
        return settings.improve.smooth_quant

    def run(self, state: State) -> State:
        if state.given_ranges or state.samples is None:
            return state  # the ranges from a file describe the model as is
        settings = state.settings
        model, report = smooth_quant(
            state.prepared, state.samples, settings.config, threads=settings.threads
        )
        return keep_if_better(state, model, report)


class OutlierChannels:
    """A sequence matrix product's few huge output channels computed apart (§I.12), before
    calibration. Silent on a model without such layers (a CNN), so its plan is as it was."""

    def applies(self, settings: Settings) -> bool:
        return settings.improve.outlier_channels

    def run(self, state: State) -> State:
        if state.given_ranges or state.samples is None:
            return state  # the ranges from a file describe the model as is
        model, report = split_outlier_channels(
            state.prepared, state.samples, threads=state.settings.threads
        )
        return keep_if_better(state, model, report)


class Calibrate:
    """The ranges of the activations the plan needs: observed, or checked to be in the file."""

    def applies(self, settings: Settings) -> bool:
        return True

    def run(self, state: State) -> State:
        settings = state.settings
        needed = activation_tensors_to_calibrate(Graph(state.prepared), settings.config)
        if state.given_ranges:
            assert state.ranges is not None  # given_ranges says so
            _check_ranges_cover(state.ranges, needed)
            return state
        assert state.source is not None  # quantize refuses no data and no ranges
        if settings.ray is not None:
            return replace(state, ranges=_calibrate_on_ray(state, needed))
        tap = _float_tap(state)
        held_back = (
            held_back_source(state, state.prepared) if tap is not None and tap.check_outputs else ()
        )
        if through_file(state.prepared):
            given = [state]
            del state  # this frame must not keep the model alive (§C.11)
            return _calibrate_from_disk(given.pop(), needed, tap, held_back)
        assert state.source is not None  # checked above (``del`` forgets it)
        ranges = _observe(state.prepared, state, state.source, needed, tap, held_back)
        shared = None if tap is None else tap.result()
        check_float = shared.held_back if shared is not None and shared.held_back else None
        return replace(state, ranges=ranges, shared_float=shared, check_float=check_float)


def _observe(
    model: onnx.ModelProto | Path,
    state: State,
    source: DataSource,
    needed: list[str],
    tap: FloatTap | None,
    held_back: Iterable[Batch],
) -> Ranges:
    """Calibration proper: ``model`` (the normalized model or its file) run on the state's
    calibration window of ``source``, observing ``needed``."""
    settings = state.settings
    return calibrate(
        model,
        window(source, 0, state.calibrate_count),
        settings.calibration,
        tensors=needed,
        threads=settings.threads,
        progress=settings.progress,
        normalized=True,
        tap=tap,
        held_back=held_back,
    )


def _calibrate_from_disk(
    state: State, needed: list[str], tap: FloatTap | None, held_back: Iterable[Batch]
) -> State:
    """(C.11) Calibration of a big model whose weights wait on disk while its session
    runs: ONNX Runtime's copy is then the only one in memory. The state given here is the
    only holder of the model (the pipeline hands states over), so once it and the tap
    hold the weightless skeleton instead, the proto is let go; the model is read back
    (the same values) when the session is gone."""
    source = state.source
    assert source is not None  # Calibrate.run checked
    spilled = SpilledModel.of(state.prepared)
    skeleton = spilled.skeleton()
    same = state.float_source is state.prepared
    state = replace(state, prepared=skeleton, float_source=skeleton if same else state.float_source)
    if tap is not None:
        tap.model = skeleton
    ranges = _observe(spilled.path, state, source, needed, tap, held_back)
    model = spilled.load()
    shared = None if tap is None else replace(tap.result(), model=model)
    check_float = shared.held_back if shared is not None and shared.held_back else None
    return replace(
        state, prepared=model, float_source=model if same else state.float_source,
        ranges=ranges, shared_float=shared, check_float=check_float,
    )  # fmt: skip


def _float_tap(state: State) -> FloatTap | None:
    """(C.10) On a big model, what the clipping choice, bias correction and the quick
    check will read of calibration's pass; None elsewhere (their own passes, as before)."""
    improve = state.settings.improve
    clipping = improve.choose_clipping
    correction = improve.bias_correction is not False and _nearest_stage(state.settings)
    correction = correction and not state.settings.learned
    graph = Graph(state.prepared)
    check = _checks_calibrated_model(state)
    if not (clipping or correction or check) or not shares_float_pass(graph):
        return None
    samples = scoring_samples(graph) if clipping else 0
    if not correction:
        return FloatTap(state.prepared, samples, check=check)
    inputs = layer_inputs(graph)
    return FloatTap(
        state.prepared, max(samples, CORRECTION_SAMPLES), inputs, CORRECTION_SAMPLES, check=check
    )


def _checks_calibrated_model(state: State) -> bool:
    """(C.10.3) Whether the quick check compares with the very model calibration runs (so
    that calibration's session can run its held-back samples too)."""
    one_process = state.settings.ray is None and state.source is not None
    return one_process and state.check_count > 0 and state.float_source is state.prepared


def held_back_source(state: State, model: onnx.ModelProto) -> DataSource:
    """The quick check's samples, fed to ``model``'s inputs in calibration's batches
    (regrouped, so that a model with a fixed batch size gets whole batches)."""
    assert state.source is not None  # the callers checked
    return open_data(
        window(state.source, state.calibrate_count, state.check_count),
        Graph(model).inputs,
        batch_size=state.settings.calibration.batch_size,
    )


def _calibrate_on_ray(state: State, needed: list[str]) -> Ranges:
    settings = state.settings
    assert state.data is not None and settings.ray is not None  # Calibrate.run checked
    return calibrate_on_ray(
        state.prepared, state.data, settings.calibration, ray=settings.ray, tensors=needed,
        threads=settings.threads, image=state.image, progress=settings.progress,
        normalized=True, count=state.calibrate_count or None,
    )  # fmt: skip


class ChooseClipping:
    """The calibrated ranges or the observed extremes, for the whole model (§I.10)."""

    def applies(self, settings: Settings) -> bool:
        return settings.improve.choose_clipping

    def run(self, state: State) -> State:
        if state.samples is None:
            return state  # ranges from a file: the user chose them
        assert state.ranges is not None  # Calibrate ran
        settings = state.settings
        ranges, report, shared = choose_clipping(
            state.prepared,
            state.ranges,
            state.samples,
            settings.config,
            separate_joins=settings.improve.separate_joins,
            threads=settings.threads,
            shared=state.shared_float,
        )
        return state.reported(report, ranges=ranges, shared_float=shared)


class RefineRanges:
    """Per-tensor choice among the calibration methods, on the calibration samples."""

    def applies(self, settings: Settings) -> bool:
        return settings.improve.refine_ranges

    def run(self, state: State) -> State:
        if state.samples is None:
            why = "no calibration data (ranges from a file)"
            return state.reported(_skipped("refine_ranges", why))
        assert state.ranges is not None  # Calibrate ran
        settings = state.settings
        ranges, report = refine_ranges(
            state.prepared, state.ranges, state.samples, settings.config, threads=settings.threads
        )
        return state.reported(report, ranges=ranges)


class Centre:
    """Non-negative tensors centred on 0 for a symmetric affine grid (§Q16.1), once the
    ranges are final; the ranges move with them. Silent where there is nothing to centre."""

    def applies(self, settings: Settings) -> bool:
        config = settings.config
        return (
            settings.improve.centre and config.scheme == "affine" and config.symmetric_activations
        )

    def run(self, state: State) -> State:
        assert state.ranges is not None  # Calibrate ran
        model, ranges, report = centre_activations(state.prepared, state.ranges)
        return state.reported(report, prepared=model, ranges=ranges)


class Plan:
    """One decision per node; the float constants as planned are kept (``State.planned``)."""

    def applies(self, settings: Settings) -> bool:
        return True

    def run(self, state: State) -> State:
        assert state.ranges is not None  # Calibrate ran
        settings = state.settings
        joins = settings.improve.separate_joins
        plan = make_plan(Graph(state.prepared), state.ranges, settings.config, separate_joins=joins)
        return replace(state, plan=plan, planned_source=state.prepared)


@dataclass(frozen=True)
class BiasCorrection:
    """Bias correction of the weights as rounded: nearest (``learned=False``) or learned.

    With learned weights to follow, the nearest correction only serves the fallback's
    decision (§R.9) and is not reported: the correction that stays is made after them.
    """

    learned: bool

    def applies(self, settings: Settings) -> bool:
        if settings.improve.bias_correction is False:
            return False
        return settings.learned if self.learned else _nearest_stage(settings)

    def run(self, state: State) -> State:
        planned, plan = state.planned, state.plan  # read once (a big one may wait on disk)
        assert plan is not None and planned is not None  # Plan ran
        settings = state.settings
        model = state.prepared if self.learned else planned
        # (C.11) A big model's uncorrected weights wait on disk as the float model and the
        # plan's source; the correction is then written into the model in memory, not a copy.
        in_place = model is planned and model is state.prepared and through_file(model)
        if in_place:
            state = _spill_sources(state)
        statistics = None
        if state.samples is None:
            assert state.exported is not None  # _start keeps it when there are no samples
            statistics = batchnorm_statistics(state.exported)
        # After learned rounding or reconstruction the weights' shifts are chosen, not
        # accidents (§I.3.1, §I.8): only the output layer is then corrected against the
        # int8 output.
        corrected, report = bias_correction(
            model,
            plan,
            state.samples,
            reference=planned,
            weight_shifts=not self.learned,
            statistics=statistics,
            keep="always" if settings.improve.bias_correction else "if_better",
            threads=settings.threads,
            shared=None if self.learned else _shared_for(state),
            in_place=in_place,
        )
        plan = rebias(Graph(corrected), plan)
        kept = report if self.learned or not settings.learned else None
        # Calibration's pass has served its last step: its means are let go (§C.10).
        return state.reported(kept, prepared=corrected, plan=plan, shared_float=None)


def _spill_sources(state: State) -> State:
    """``state`` whose float model and planned model, where they are ``prepared``, read
    from one copy of it on disk (``prepared`` stays in memory)."""
    spilled = SpilledModel.of(state.prepared)
    float_source = spilled if state.float_source is state.prepared else state.float_source
    return replace(state, float_source=float_source, planned_source=spilled)


def _shared_for(state: State) -> SharedFloat | None:
    """Calibration's pass for bias correction (§C.10), with the clipping choice's int8
    output only if the plan was made from the ranges it was scored with (a later step,
    centring or refinement, makes new ranges)."""
    shared = state.shared_float
    if shared is None or shared.int8_ranges is state.ranges:
        return shared
    return replace(shared, int8_ranges=None, int8_output=None)


@dataclass(frozen=True)
class Export:
    """The QDQ model of the prepared model and its plan: nearest (``learned=False``) or learned."""

    learned: bool

    def applies(self, settings: Settings) -> bool:
        return settings.learned if self.learned else _nearest_stage(settings)

    def run(self, state: State) -> State:
        assert state.plan is not None  # Plan ran
        return replace(state, qdq=to_qdq(state.prepared, state.plan))


class Fallback:
    """Nodes back to float until the budget (``max_drop``/``min_sqnr``) holds (§R.7-§R.10)."""

    def applies(self, settings: Settings) -> bool:
        return settings.improve.fallback

    def run(self, state: State) -> State:
        assert state.plan is not None and state.qdq is not None  # Export ran
        assert state.samples is not None  # quantize's _require_steps
        settings = state.settings
        net = rebuild_source(state)
        if not settings.config.profile.float_nodes:  # mcu: promotion is the only tool (§R.11)
            return _promote_for_budget(state, net)
        score = _ray_score(state, net)
        try:
            qdq, plan, report, holds = run_fallback(
                net, state.plan, state.qdq, state.samples, settings.improve,
                settings.metric, settings.threads, settings.progress, score,
                rank_sqnrs=None if score is None else score.sqnrs_on,
                check=None if score is None else score.quick_checks,
            )  # fmt: skip
        finally:
            if score is not None:
                score.close()
        changes: dict[str, object] = {}
        # §R.11: promotion where float misses (a budget held needs no second measurement)
        if settings.config.profile.int16_activations and not holds:
            qdq, plan, report, promoted = promote_after_fallback(
                (net, state.plan, state.qdq), (qdq, plan, report), state.samples,
                settings.improve, settings.metric, settings.threads,
            )  # fmt: skip
            if promoted is not None:
                changes = {"prepared": promoted.prepared, "ranges": promoted.ranges}
        if settings.learned:
            report = replace(report, notes=(*report.notes, _FALLBACK_FIRST))
        return state.reported(report, qdq=qdq, plan=plan, **changes)


def _promote_for_budget(state: State, net: Prepared) -> State:
    """The budget met by promoting tensors to int16 on a target without float kernels."""
    assert state.plan is not None and state.qdq is not None and state.samples is not None
    settings = state.settings
    promoted = run_promotion(
        net, state.plan, state.qdq, state.samples, settings.improve.budget(settings.metric),
        settings.threads, settings.progress, joins=settings.improve.separate_joins,
    )  # fmt: skip
    report = promoted.report
    if settings.learned:
        report = replace(report, notes=(*report.notes, _FALLBACK_FIRST))
    net = promoted.net  # what the plan quantizes: the extremes, the model corrected again
    return state.reported(
        report, qdq=promoted.qdq, plan=promoted.plan, prepared=net.prepared, ranges=net.ranges
    )


def _ray_score(state: State, net: Prepared) -> RayScore | None:
    """The fallback's scorer on the cluster, over the calibration samples (None: here)."""
    settings = state.settings
    if settings.ray is None or state.data is None:
        return None
    return RayScore(
        net.float_model, state.data, ray=settings.ray, batch_size=EVALUATION_BATCH,
        metric=settings.metric, image=state.image, count=state.calibrate_count or None,
        threads=settings.threads,
    )  # fmt: skip


_FALLBACK_FIRST = (
    "decided with nearest rounding; the learned weights were then chosen on the final plan "
    "(the nodes returned to float stay float)"
)


class LearnedWeights:
    """AdaRound or reconstruction of the planned weights, on the plan the fallback left
    (same configuration, same ranges: only the weights and biases move)."""

    def applies(self, settings: Settings) -> bool:
        return settings.learned

    def run(self, state: State) -> State:
        planned = state.planned  # read once (a big one may wait on disk)
        assert state.plan is not None and planned is not None and state.ranges is not None
        assert state.samples is not None  # quantize's _require_steps
        settings, improve = state.settings, state.settings.improve
        joins = improve.separate_joins
        plan = state.plan
        # The nearest stage's plan holds its corrected biases (the fallback's, or default's
        # before its reconstruction rule, §I.8.3): plan the planned model again.
        if _nearest_stage(settings):
            plan = make_plan(Graph(planned), state.ranges, plan.config, separate_joins=joins)
        if improve.adaround:
            options = AdaRoundOptions(iterations=improve.adaround_iters)
            model, report = adaround(
                planned, plan, state.samples, options,
                threads=settings.threads, progress=settings.progress,
            )  # fmt: skip
        else:
            model, report = reconstruct(
                planned, plan, state.samples,
                threads=settings.threads, progress=settings.progress,
            )  # fmt: skip
        plan = make_plan(Graph(model), state.ranges, plan.config, separate_joins=joins)
        return state.reported(report, prepared=model, plan=plan)


class Finetune:
    """Quantization-aware fine-tuning (§T.5) of the final post-training model: weights and
    activation scales trained through its grids; kept only when the exported model is
    better on samples held back from training (the quick check's stay unseen)."""

    def applies(self, settings: Settings) -> bool:
        return settings.improve.finetune

    def run(self, state: State) -> State:
        assert state.plan is not None and state.ranges is not None and state.qdq is not None
        assert state.samples is not None  # quantize's _require_steps
        settings = state.settings
        result = finetune(
            state.prepared, state.float_model, state.plan, state.ranges, state.qdq,
            state.samples, FinetuneOptions(steps=settings.improve.finetune_steps),
            separate_joins=settings.improve.separate_joins, threads=settings.threads,
            progress=settings.progress,
        )  # fmt: skip
        return state.reported(
            result.report, prepared=result.model, ranges=result.ranges, plan=result.plan,
            qdq=result.qdq,
        )  # fmt: skip


def _nearest_stage(settings: Settings) -> bool:
    """Whether the nearest-rounded model is made: it is the result, or the fallback judges
    it before the weights are learned."""
    return not settings.learned or settings.improve.fallback


def rebuild_source(state: State) -> Prepared:
    """What a fallback rebuilds from (``eightbit.rebuild``)."""
    planned = state.planned
    assert planned is not None and state.ranges is not None  # Plan ran
    return Prepared(state.float_model, state.prepared, planned, state.ranges, state.settings.config)


def _skipped(name: str, why: str) -> StepReport:
    return StepReport(name, 0.0, None, None, notes=(f"skipped: {why}",))


def _check_ranges_cover(ranges: Ranges, needed: list[str]) -> None:
    missing = [name for name in needed if name not in ranges]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ConfigError(
            f"the ranges file has no range for {shown}{more}; it was calibrated for another "
            "model or another --op-types/--exclude choice: rerun eightbit calibrate on this model "
            "(with --all-tensors to observe every activation)"
        )
