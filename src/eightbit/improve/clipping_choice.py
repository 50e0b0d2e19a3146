"""One clipping policy for the whole model: the calibrated ranges or the observed extremes,
whichever the output prefers (docs/numerics.md §I.10).

Percentile and the other histogram methods clip the rare large values of every tensor. That
is what a CNN wants, and what a transformer or a byte-level classifier does not: their large
values are few but carry the signal, and clipping them in every layer costs several dB at the
output. The choice is one bit for the whole model, measured on the calibration samples, so
it cannot fit them the way a per-tensor choice does (§I.4.2).
"""

from __future__ import annotations

import time

import onnx

from eightbit.calibrate import Ranges
from eightbit.calibrate.data import DataLike
from eightbit.export import to_qdq
from eightbit.graph import Graph
from eightbit.improve.measure import OutputReference, read_samples
from eightbit.plan import make_plan
from eightbit.quant import QuantConfig
from eightbit.steps import StepReport

NAME = "clipping"
# Samples the choice is measured on (read once, held in memory).
SAMPLES = 32
# The observed extremes replace the calibrated ranges only when the output gains at least
# this much: below it, the difference is within what other samples would change.
MARGIN_DB = 0.5


def choose_clipping(
    model: onnx.ModelProto,
    ranges: Ranges,
    data: DataLike,
    config: QuantConfig,
    *,
    separate_joins: bool = False,
    threads: int | None = None,
) -> tuple[Ranges, StepReport]:
    """``ranges``, or the observed extremes if the int8 model's first output is better with
    them by ``MARGIN_DB`` on the first calibration samples of ``data``."""
    started = time.perf_counter()
    if ranges.method == "minmax":
        return ranges, _report(started, None, None, "skipped: the ranges are the extremes already")
    graph = Graph(model)
    reference = OutputReference(model, read_samples(data, graph, SAMPLES), threads)

    def score(candidate: Ranges) -> float:
        return reference.sqnr(
            to_qdq(model, make_plan(graph, candidate, config, separate_joins=separate_joins))
        )

    calibrated_db = score(ranges)
    extremes = ranges.extremes()
    extremes_db = score(extremes)
    if extremes_db >= calibrated_db + MARGIN_DB:
        note = (
            f"observed extremes chosen over {ranges.method} ranges: output SQNR "
            f"{calibrated_db:.2f} -> {extremes_db:.2f} dB on calibration samples"
        )
        return extremes, _report(started, calibrated_db, extremes_db, note)
    note = (
        f"{ranges.method} ranges kept (observed extremes: {extremes_db:.2f} dB against "
        f"{calibrated_db:.2f} dB on calibration samples)"
    )
    return ranges, _report(started, calibrated_db, calibrated_db, note)


def _report(started: float, before: float | None, after: float | None, note: str) -> StepReport:
    return StepReport(NAME, time.perf_counter() - started, before, after, notes=(note,))
