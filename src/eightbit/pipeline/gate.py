"""A float-model rewrite kept only when the int8 model gains by it (numerics §I.13).

SmoothQuant (§I.11) and the outlier split (§I.12) each choose their scales or channels from
local errors, which the whole network does not always confirm (a ViT-S lost about 1.3 dB to
each). Like bias correction, each step is therefore measured end to end: the model before
and after the rewrite is calibrated, planned and exported as the pipeline would, on the
same calibration samples, and the rewrite stays only if the first output's SQNR rises.
"""

from __future__ import annotations

import time
from dataclasses import replace

import onnx

from eightbit.calibrate import calibrate
from eightbit.export import to_qdq
from eightbit.graph import Graph
from eightbit.improve.measure import OutputReference, count, read_samples
from eightbit.pipeline.state import Settings, State
from eightbit.plan import activation_tensors_to_calibrate, make_plan
from eightbit.steps import StepReport

# Calibration samples each candidate is calibrated and measured on.
GATE_SAMPLES = 32


def keep_if_better(state: State, rewritten: onnx.ModelProto, report: StepReport | None) -> State:
    """``state`` with ``rewritten`` as its prepared model if the int8 output's SQNR on the
    calibration samples is higher with it, else unchanged; the report says which."""
    if report is None or rewritten is state.prepared:
        return state.reported(report, prepared=rewritten)
    assert state.samples is not None  # the rewriting steps ran on them
    started = time.perf_counter()
    settings = state.settings
    batches = read_samples(state.samples, Graph(state.prepared), GATE_SAMPLES)
    # Both models compute the same float function: one reference serves both.
    reference = OutputReference(state.prepared, batches, settings.threads)
    before = _output_sqnr_db(state.prepared, batches, reference, settings)
    after = _output_sqnr_db(rewritten, batches, reference, settings)
    kept = after > before
    verdict = "kept" if kept else "reverted"
    note = (
        f"{verdict}: int8 output SQNR {before:.2f} -> {after:.2f} dB on {count(batches)} "
        "calibration samples"
    )
    gated = replace(
        report,
        seconds=report.seconds + time.perf_counter() - started,
        before_db=before,
        after_db=after if kept else before,
        notes=(*report.notes, note),
    )
    return state.reported(gated, prepared=rewritten if kept else state.prepared)


def _output_sqnr_db(
    model: onnx.ModelProto,
    batches: list[dict],
    reference: OutputReference,
    settings: Settings,
) -> float:
    """The first output's SQNR of ``model`` quantized as the pipeline's plan would."""
    graph = Graph(model)
    needed = activation_tensors_to_calibrate(graph, settings.config)
    ranges = calibrate(
        model, batches, settings.calibration, tensors=needed, threads=settings.threads,
        normalized=True,
    )  # fmt: skip
    plan = make_plan(graph, ranges, settings.config, separate_joins=settings.improve.separate_joins)
    return reference.sqnr_of(reference.outputs(to_qdq(model, plan)))
