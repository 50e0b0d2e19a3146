"""``quantize``: the main job, float ONNX model + data -> int8 QDQ model and its plan.

Each stage is a function from one plain value to the next (docs/numerics.md, docs/design.md):

    load/normalize -> equalize -> calibrate (only the tensors the plan needs)
    -> refine_ranges -> make_plan -> adaround | reconstruct -> bias_correction -> rebias
    -> to_qdq
    -> fallback

(with learned weights, fallback comes first: it decides on nearest rounding, then the
weights are learned on its final plan, docs/numerics.md §R.9)

(the improvement steps of ``eightbit.improve`` run as ``ImproveConfig`` says; each adds its
``StepReport`` to the plan), then a quick check on samples held back from calibration: top-1
agreement with the original float model, output SQNR and the worst slice (§A.9), so a user
sees at once whether int8 kept the network's behaviour; when it did not (a collapsed slice,
a slice under 10 dB), the safety net runs the fallback (§I.9).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from eightbit._io import refuse_overwrite
from eightbit.analysis.quick_check import QuickCheck, quick_check
from eightbit.calibrate import CalibrationConfig, ImageOptions, Ranges, calibrate, open_data
from eightbit.calibrate.data import DataLike, DataSource
from eightbit.errors import ConfigError
from eightbit.export import to_qdq
from eightbit.graph import Graph, load_model, normalize, save_model
from eightbit.graph.stem import space_to_depth_stems
from eightbit.improve.presets import PRESETS, ImproveConfig, preset
from eightbit.improve.refine import refine_ranges
from eightbit.improve.weights.bias_correction import batchnorm_statistics, bias_correction
from eightbit.improve.weights.equalize import equalize
from eightbit.improve.weights.reconstruct import reconstruct
from eightbit.plan import (
    QuantPlan,
    activation_tensors_to_calibrate,
    make_plan,
    plan_path_for,
    rebias,
)
from eightbit.quant import QuantConfig
from eightbit.rebuild import Metric, Prepared, run_fallback, safety_net
from eightbit.safety_net import missed_floor
from eightbit.steps import StepReport

# Samples held back from calibration for the quick check, at most, and at most this
# share of the data: a check should not starve calibration of a small data set.
DEFAULT_CHECK_SAMPLES = 64
CHECK_SHARE = 0.2


@dataclass(frozen=True)
class QuantizedModel:
    """The result of ``quantize``: the QDQ model, its plan, and what was measured.

    ``float_model``: the original model, normalized: what the int8 model is checked
    against. ``prepared_model``: the float model the QDQ model quantizes, after the
    improvement steps (equalized, learned-rounded, bias-corrected); ``ranges`` are its
    activation ranges. ``make_plan(Graph(prepared_model), ranges, config,
    separate_joins=...)`` (as the preset said, §Q13) and ``to_qdq`` rebuild the QDQ model,
    e.g. with other nodes excluded.
    """

    model: onnx.ModelProto
    plan: QuantPlan
    float_model: onnx.ModelProto = field(repr=False)
    ranges: Ranges | None = field(default=None, repr=False)
    check: QuickCheck | None = None
    calibration_samples: int = 0
    prepared_model: onnx.ModelProto | None = field(default=None, repr=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model (checked, atomically) and its plan beside it; returns the plan path."""
        save_model(self.model, path)
        plan_path = plan_path_for(path)
        self.plan.save(plan_path)
        return plan_path


def quantize(
    model: str | os.PathLike[str] | onnx.ModelProto,
    data: DataLike | None = None,
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
) -> QuantizedModel:
    """Quantize ``model`` to int8 as ``config`` says, calibrating on ``data``.

    ``ranges`` (from ``eightbit calibrate``) skips calibration; ``data`` is then only used
    for the quick check. ``check_samples`` samples at the end of the data are held back
    from calibration for the quick check (default: up to 64, at most a fifth of the data;
    0 disables it). ``improve``: the improvement steps, an ``ImproveConfig`` or a preset
    name (``"fast"``, ``"default"``, ``"accurate"``; None is ``"default"``). ``metric``:
    ``metric(float_output, int8_output)`` for the fallback budget ``max_drop`` instead of
    top-1 agreement.
    """
    config = config or QuantConfig()
    calibration = calibration or CalibrationConfig()
    improve = _improve_config(improve)
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"'config' must be a QuantConfig (got {type(config).__name__})")
    if data is None and ranges is None:
        raise ConfigError("quantize needs calibration data, or ranges from eightbit calibrate")
    _require_steps(improve, data, ranges is not None)
    exported = load_model(model)
    float_model = normalize(exported)
    graph = Graph(float_model)

    source = None
    if data is not None:
        source = open_data(
            data,
            graph.inputs,
            batch_size=calibration.batch_size,
            image=image,
            skip_nonfinite=calibration.skip_nonfinite,
        )
    calibrate_count, check_count = _split(source, calibration, check_samples, ranges is None)
    # The steps learn from the calibration samples only; the held-back ones stay unseen.
    samples = None if source is None or ranges is not None else _window(source, 0, calibrate_count)
    steps: list[StepReport] = []

    prepared = float_model
    if config.space_to_depth_stem:
        prepared, report = _space_to_depth_stems(prepared)
        if report is not None:
            steps.append(report)
    if improve.equalize:
        if ranges is not None:
            steps.append(_skipped("equalize", "the ranges from a file describe the model as is"))
        else:
            prepared, report = equalize(prepared, samples, config, threads=threads)
            steps.append(report)
    prepared_graph = Graph(prepared)
    needed = activation_tensors_to_calibrate(prepared_graph, config)
    if ranges is None:
        assert source is not None  # guaranteed by the check above
        ranges = calibrate(
            prepared,
            _window(source, 0, calibrate_count),
            calibration,
            tensors=needed,
            threads=threads,
            progress=progress,
            normalized=True,
        )
    else:
        _check_ranges_cover(ranges, needed)
    if improve.refine_ranges:
        if samples is None:
            steps.append(_skipped("refine_ranges", "no calibration data (ranges from a file)"))
        else:
            ranges, report = refine_ranges(prepared, ranges, samples, config, threads=threads)
            steps.append(report)
    joins = improve.separate_joins
    plan = make_plan(prepared_graph, ranges, config, separate_joins=joins)
    planned = prepared  # the float constants as planned, before rounding and correction
    learned = improve.adaround or improve.reconstruct
    if improve.fallback and learned:
        # Fallback decides on nearest rounding; the learned weights come afterwards, on the
        # final plan (§R.9): learned rounding tunes each layer to the error of the layers
        # before it, so returning one of those to float afterwards over-compensates.
        assert samples is not None  # _require_steps
        nearest, nearest_plan = planned, plan
        if improve.bias_correction is not False:
            nearest, nearest_plan, _ = _correct_biases(
                planned, plan, planned, samples, exported, improve, learned=False, threads=threads
            )
        net = Prepared(float_model, nearest, planned, ranges, config)
        _, decided, report = run_fallback(
            net, nearest_plan, to_qdq(nearest, nearest_plan), samples, improve, metric, threads,
            progress,
        )  # fmt: skip
        steps.append(replace(report, notes=(*report.notes, _FALLBACK_FIRST)))
        plan = make_plan(prepared_graph, ranges, decided.config, separate_joins=joins)
    prepared, plan, learned_steps = _learned_weights(
        planned, plan, ranges, samples, improve, threads, progress
    )
    steps.extend(learned_steps)
    if improve.bias_correction is not False:
        prepared, plan, report = _correct_biases(
            prepared, plan, planned, samples, exported, improve, learned=learned, threads=threads
        )
        steps.append(report)
    qdq = to_qdq(prepared, plan)
    if improve.fallback and not learned:
        assert samples is not None  # _require_steps
        net = Prepared(float_model, prepared, planned, ranges, config)
        qdq, plan, report = run_fallback(
            net, plan, qdq, samples, improve, metric, threads, progress
        )
        steps.append(report)
    check = None
    if source is not None and check_count > 0:
        # Regrouped so that a model with a fixed batch size gets whole batches.
        held_back = open_data(
            _window(source, calibrate_count, check_count),
            graph.inputs,
            batch_size=calibration.batch_size,
        )
        check = quick_check(float_model, qdq, held_back, threads)
        missed = missed_floor(check) if improve.safety_net and not improve.fallback else {}
        if missed:
            net = Prepared(float_model, prepared, planned, ranges, config)
            before = qdq
            qdq, plan, report = safety_net(net, plan, qdq, samples, missed, improve, threads)
            steps.append(report)
            if qdq is not before:  # nodes were returned to float: judge the new model
                check = quick_check(float_model, qdq, held_back, threads)
    plan = replace(plan, steps=tuple(steps))
    return QuantizedModel(
        model=qdq,
        plan=plan,
        float_model=float_model,
        ranges=ranges,
        check=check,
        calibration_samples=getattr(ranges, "samples", 0) or 0,
        prepared_model=prepared,
    )


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
    for wanted, module, flag in (
        (improve.adaround, "eightbit.improve.weights.adaround", "--adaround"),
        (improve.fallback, "eightbit.improve.fallback.driver", "--max-drop/--min-sqnr"),
    ):
        if wanted and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{flag} is not available yet in this eightbit ({module})")
    if improve.adaround:
        importlib.import_module("eightbit.improve.weights.adaround").require_torch()
    for wanted, flag in (
        (improve.adaround, "--adaround"),
        (improve.reconstruct, "--reconstruct"),
        (improve.fallback, "--max-drop/--min-sqnr"),
    ):
        if wanted and (data is None or given_ranges):
            raise ConfigError(
                f"{flag} needs calibration samples: give --data, and calibrate here rather "
                "than with --ranges (which holds all the data back for the check)"
            )


def _space_to_depth_stems(model: onnx.ModelProto) -> tuple[onnx.ModelProto, StepReport | None]:
    """The stem rewrite of ``QuantConfig.space_to_depth_stem``, reported when it applied."""
    started = time.perf_counter()
    rewritten, names = space_to_depth_stems(model)
    if not names:
        return model, None
    note = (
        f"{len(names)} strided Conv(s) on a graph input rewritten as SpaceToDepth + "
        f"stride-1 Conv (same integers, faster int8 kernels): {', '.join(names)}"
    )
    seconds = time.perf_counter() - started
    return rewritten, StepReport("space_to_depth_stem", seconds, None, None, (), (note,))


def _skipped(name: str, why: str) -> StepReport:
    return StepReport(name, 0.0, None, None, notes=(f"skipped: {why}",))


_FALLBACK_FIRST = (
    "decided with nearest rounding; the learned weights were then chosen on the final plan "
    "(the nodes returned to float stay float)"
)


def _learned_weights(
    model: onnx.ModelProto,
    plan: QuantPlan,
    ranges: Ranges,
    samples: DataLike | None,
    improve: ImproveConfig,
    threads: int | None,
    progress: bool,
) -> tuple[onnx.ModelProto, QuantPlan, list[StepReport]]:
    """Learned rounding or reconstruction of ``model``'s weights, if asked, and the plan of
    the result (same configuration, same ranges: only the weights and biases moved)."""
    reports = []
    if improve.adaround:
        assert samples is not None  # _require_steps
        model, report = _adaround(model, plan, samples, improve, threads, progress)
        reports.append(report)
    if improve.reconstruct:
        assert samples is not None  # _require_steps
        model, report = reconstruct(model, plan, samples, threads=threads, progress=progress)
        reports.append(report)
    if reports:
        joins = improve.separate_joins
        plan = make_plan(Graph(model), ranges, plan.config, separate_joins=joins)
    return model, plan, reports


def _correct_biases(
    model: onnx.ModelProto,
    plan: QuantPlan,
    planned: onnx.ModelProto,
    samples: DataLike | None,
    exported: onnx.ModelProto,
    improve: ImproveConfig,
    *,
    learned: bool,
    threads: int | None,
) -> tuple[onnx.ModelProto, QuantPlan, StepReport]:
    """Bias correction of ``model`` (weights as ``plan`` rounds them, against ``planned``)."""
    # After learned rounding or reconstruction the weights' shifts are chosen, not
    # accidents (§I.3.1, §I.8): only the output layer is then corrected against the
    # int8 output.
    corrected, report = bias_correction(
        model,
        plan,
        samples,
        reference=planned,
        weight_shifts=not learned,
        statistics=batchnorm_statistics(exported) if samples is None else None,
        keep="always" if improve.bias_correction else "if_better",
        threads=threads,
    )
    return corrected, rebias(Graph(corrected), plan), report


def _adaround(
    model: onnx.ModelProto,
    plan: QuantPlan,
    samples: DataLike,
    improve: ImproveConfig,
    threads: int | None,
    progress: bool,
) -> tuple[onnx.ModelProto, StepReport]:
    module = importlib.import_module("eightbit.improve.weights.adaround")
    options = module.AdaRoundOptions(iterations=improve.adaround_iters)
    result: tuple[onnx.ModelProto, StepReport] = module.adaround(
        model, plan, samples, options, threads=threads, progress=progress
    )
    return result


def save_quantized(
    result: QuantizedModel, output: str | os.PathLike[str], *inputs: str | os.PathLike[str]
) -> Path:
    """``result.save(output)`` after refusing to overwrite any of ``inputs``."""
    refuse_overwrite(output, *inputs)
    refuse_overwrite(plan_path_for(output), *inputs)
    return result.save(output)


def _split(
    source: DataSource | None,
    calibration: CalibrationConfig,
    check_samples: int | None,
    calibrating: bool,
) -> tuple[int, int]:
    """How many samples calibrate and how many, after them, check."""
    if check_samples is not None and (
        isinstance(check_samples, bool) or not isinstance(check_samples, int) or check_samples < 0
    ):
        raise ConfigError(f"'check_samples' must be an integer >= 0 (got {check_samples!r})")
    if source is None:
        return 0, 0
    total = source.samples
    if not calibrating:
        # Ranges came from a file: every sample can serve the check.
        wanted = DEFAULT_CHECK_SAMPLES if check_samples is None else check_samples
        return 0, wanted if total is None else min(wanted, total)
    if total is None:
        # An iterable of unknown length: calibrate on what was asked, check on nothing
        # unless a count was given explicitly.
        count = calibration.samples or 0
        return count, check_samples or 0 if calibration.samples else 0
    if check_samples is None:
        check_samples = min(DEFAULT_CHECK_SAMPLES, int(total * CHECK_SHARE))
    check_samples = min(check_samples, max(total - 1, 0))
    calibrate_count = total - check_samples
    if calibration.samples is not None:
        calibrate_count = min(calibrate_count, calibration.samples)
        check_samples = min(check_samples, total - calibrate_count)
    return calibrate_count, check_samples


class _Window:
    """Samples ``[start, start + count)`` of a data source, as batches (re-iterable)."""

    def __init__(self, source: DataSource, start: int, count: int) -> None:
        self.source, self.start, self.count = source, start, count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        seen = 0
        end = self.start + self.count
        for batch in self.source:
            rows = len(next(iter(batch.values())))
            low, high = max(self.start - seen, 0), min(end - seen, rows)
            seen += rows
            if high > low:
                yield {name: array[low:high] for name, array in batch.items()}
            if seen >= end:
                return


def _window(source: DataSource, start: int, count: int) -> _Window | DataSource:
    if count <= 0 and start == 0:
        return source  # unknown length: the whole source
    return _Window(source, start, count)


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
