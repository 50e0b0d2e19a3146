"""``mode="auto"``: static, unless the graph is a transformer and dynamic mode does better
at no more latency (docs/numerics.md §D.6).

A graph that is no transformer (``ops.attention.transformer_evidence``) is quantized
statically with nothing else run or recorded, so CNN results stay what they were. A
transformer is quantized in both modes (dynamic takes a fraction of static's time), and
the better of the two by the first output's SQNR on the same held-back samples is kept
among those whose latency (both int8 models timed interleaved on one sample) is within
``LATENCY_TOLERANCE`` of the faster: dynamic mode leaves every Conv float, so a transformer
behind a convolutional backbone (DETR) can be more accurate and much slower in it. A
static model that misses the safety net's floor (``safety_net.missed_floor``) is no
candidate for its speed: a broken model is not worth any latency.
Whether the static model meets the budget (``min_sqnr`` if given, else
``AUTO_MIN_SQNR_DB``) is no evidence, since a few held-back samples can read it 5 dB high
(a ViT-S: 28.2 dB there, 22.9 dB on 64 evaluation images). The plan records the choice in
a ``mode`` step whose note the summary prints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

import onnx

from eightbit.analysis.latency import interleaved_medians_ms
from eightbit.calibrate import ImageOptions, open_data
from eightbit.calibrate.data import DataLike
from eightbit.errors import ConfigError
from eightbit.graph import Graph
from eightbit.improve.fallback.cost import one_sample
from eightbit.improve.presets import ImproveConfig
from eightbit.ops.attention import transformer_evidence
from eightbit.pipeline.state import QuantizedModel
from eightbit.quant import QuantConfig
from eightbit.safety_net import missed_floor
from eightbit.steps import StepReport

# The budget the choice's note measures against when the user gave none: the output
# SQNR at which sentence embeddings and ViT logits keep their neighbours and classes.
AUTO_MIN_SQNR_DB = 25.0
MODE_STEP = "mode"
# The more accurate mode is kept only if its model runs within this factor of the faster
# one's time: the latency target allows 5%, and two timings of one graph differ by
# a few per cent (the safety net's CAP_TOLERANCE).
LATENCY_TOLERANCE = 1.05
# Dynamic mode is chosen without running static's safety net when it is this much better
# than static before the net (eq. D.6a): the net returns at most a few nodes to float, and
# the output SQNR it bought was under 1 dB on every model measured (RESULTS.md).
NET_REACH_DB = 10.0
# Interleaved runs of each int8 model on one sample: both see the same load of the machine.
LATENCY_RUNS = 10
LATENCY_WARMUP = 2

# Median milliseconds of each model's runs, timed interleaved on one sample.
Timer = Callable[[Sequence[onnx.ModelProto]], Sequence[float]]


class StagedRun(Protocol):
    """A quantize run stopped before its safety net (``pipeline.Staged``)."""

    def before_net(self) -> QuantizedModel: ...

    def finish(self) -> QuantizedModel: ...


def choose_mode(
    evidence: str | None,
    config: QuantConfig,
    improve: ImproveConfig,
    run: Callable[[QuantConfig, float | None], StagedRun],
    timer: Timer | None = None,
    *,
    held_back: bool = True,
) -> QuantizedModel:
    """The quantized model of ``config`` with its mode chosen (``config.mode == "auto"``);
    ``evidence``: ``model_evidence`` of the model; ``run(config, rival_db)`` quantizes with
    a concrete mode up to the safety net (reading the model itself, so that a model run once
    is let go of), ``rival_db`` the other mode's SQNR, if known (``Settings.rival_db``);
    ``timer``: the two int8 models' latencies (None: the choice is by SQNR alone);
    ``held_back``: False when no sample will be held back to judge on (``check_samples=0``):
    static is kept, and dynamic is not made only to be dropped.

    Dynamic mode runs first: it takes a fraction of static's time, and its SQNR tells
    static's run whether reconstructing the weights could still matter (eq. I.23)."""
    static = replace(config, mode="static")
    if evidence is None or not _can_run_dynamic(config):
        return run(static, None).finish()
    started = time.perf_counter()
    if not held_back:
        return _noted(run(static, None).finish(), _unjudged(evidence), started, None, None)
    second: QuantizedModel | None = None
    refusal: ConfigError | None = None
    try:
        second = run(replace(config, mode="dynamic"), None).finish()
    except ConfigError as refused:  # e.g. nothing for dynamic mode to quantize
        refusal = refused
    dynamic_db = None if second is None else _sqnr(second)
    staged = run(static, dynamic_db)
    budget = improve.min_sqnr if improve.min_sqnr is not None else AUTO_MIN_SQNR_DB
    before = staged.before_net()
    before_db = _sqnr(before)
    if before_db is None:  # no check: the net has nothing to engage on
        return _noted(staged.finish(), _unjudged(evidence), started, None, None)
    if second is None:
        first = staged.finish()
        static_db = _or_else(_sqnr(first), before_db)
        note = f"mode: static ({static_db:.1f} dB); dynamic mode refused: {refusal}"
        return _noted(first, note, started, static_db, static_db)
    beyond = _beyond_the_net(before, second, improve)
    if beyond is not None:
        return _noted(second, beyond, started, before_db, dynamic_db)
    del before
    first = staged.finish()
    static_db = _or_else(_sqnr(first), before_db)
    if dynamic_db is None or dynamic_db <= static_db:
        shown = "-" if dynamic_db is None else f"{dynamic_db:.1f}"
        note = f"mode: static, kept because dynamic gave {shown} dB against {static_db:.1f} dB"
        return _noted(first, note, started, static_db, static_db)
    slower = _slower(timer, first, second)
    missed = list(missed_floor(first.check).values())
    if slower is not None and not missed:
        note = (
            f"mode: static ({static_db:.1f} dB), kept because dynamic mode's "
            f"{dynamic_db:.1f} dB ran {slower:.2f}x static's time (limit "
            f"{LATENCY_TOLERANCE:g}x; {evidence})"
        )
        return _noted(first, note, started, static_db, static_db)
    note = (
        f"mode: dynamic, chosen because static gave {static_db:.1f} dB against "
        f"{dynamic_db:.1f} dB (budget {budget:g} dB; {evidence})"
    )
    if slower is not None:
        note += f"; at {slower:.2f}x static's time, since static misses the floor: {missed[0]}"
    return _noted(second, note, started, static_db, dynamic_db)


def _beyond_the_net(
    static: QuantizedModel, dynamic: QuantizedModel, improve: ImproveConfig
) -> str | None:
    """The note of a dynamic model chosen without running static's safety net, or None
    (§D.6, eq. D.6a): the net would engage (static misses the floor), dynamic holds the
    floor, and it is ``NET_REACH_DB`` or more better than static, more than the net's few
    nodes back in float have moved any output."""
    missed = list(missed_floor(static.check).values())
    static_db, dynamic_db = _sqnr(static), _sqnr(dynamic)
    if not missed or missed_floor(dynamic.check) or static_db is None or dynamic_db is None:
        return None
    if not improve.safety_net or improve.fallback or dynamic_db < static_db + NET_REACH_DB:
        return None
    return (
        f"mode: dynamic, chosen because static gave {static_db:.1f} dB against "
        f"{dynamic_db:.1f} dB and misses the floor ({missed[0]}); static's safety net was "
        f"not run: dynamic is {NET_REACH_DB:g} dB or more better, beyond what the net's "
        "few nodes back in float move"
    )


def dynamic_too_slow(static_ms: float, dynamic_ms: float) -> bool:
    """Whether the dynamic model's time exceeds ``LATENCY_TOLERANCE`` times the static's."""
    return dynamic_ms > LATENCY_TOLERANCE * static_ms


def _slower(timer: Timer | None, static: QuantizedModel, dynamic: QuantizedModel) -> float | None:
    """Dynamic's time over static's when ``dynamic_too_slow``, else None (also untimed)."""
    if timer is None:
        return None
    static_ms, dynamic_ms = timer([static.model, dynamic.model])
    return dynamic_ms / static_ms if dynamic_too_slow(static_ms, dynamic_ms) else None


def latency_timer(
    model: onnx.ModelProto, data: DataLike | None, image: ImageOptions | None
) -> Timer | None:
    """``choose_mode``'s timer on the first sample of ``data`` (the model's fixed batch if
    it has one), or None without data. The sample is read when the models are timed, after
    both modes have read the data, so no step sees it read once more before its own."""
    if data is None:
        return None
    inputs = Graph(model).inputs  # not the model: a big one is let go of while timing

    def timer(models: Sequence[onnx.ModelProto]) -> Sequence[float]:
        feed = one_sample(open_data(data, inputs, batch_size=1, image=image), inputs)
        return interleaved_medians_ms(models, feed, runs=LATENCY_RUNS, warmup=LATENCY_WARMUP)

    return timer


def model_evidence(model: onnx.ModelProto) -> str | None:
    """Why ``model`` is a transformer (``choose_mode`` then tries both modes), or None."""
    return transformer_evidence(Graph(model))


def mode_note(result: QuantizedModel) -> str | None:
    """The choice's one line, when the mode was chosen (for the summary)."""
    for step in result.plan.steps:
        if step.name == MODE_STEP and step.notes:
            return step.notes[0]
    return None


def _can_run_dynamic(config: QuantConfig) -> bool:
    try:
        replace(config, mode="dynamic")
    except Exception:
        return False
    return True


def _sqnr(result: QuantizedModel) -> float | None:
    if result.check is None or not result.check.outputs:
        return None
    value = result.check.outputs[0].sqnr_db
    return value if not math.isnan(value) else None


def _unjudged(evidence: str) -> str:
    return f"mode: static ({evidence}; no held-back samples to judge it on)"


def _or_else(value: float | None, otherwise: float) -> float:
    return otherwise if value is None else value


def _noted(
    result: QuantizedModel,
    note: str,
    started: float,
    before: float | None,
    after: float | None,
) -> QuantizedModel:
    report = StepReport(MODE_STEP, time.perf_counter() - started, before, after, (), (note,))
    plan = replace(result.plan, steps=(*result.plan.steps, report))
    return replace(result, plan=plan)
