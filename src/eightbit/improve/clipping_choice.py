"""One clipping policy for the whole model: the calibrated ranges or the observed extremes,
whichever the output prefers (docs/numerics.md §I.10); for an output joined from parts
(a detector's boxes and scores), a milder percentile too, judged on the worst part.

Percentile and the other histogram methods clip the rare large values of every tensor. That
is what a CNN wants, and what a transformer or a byte-level classifier does not: their large
values are few but carry the signal, and clipping them in every layer compounds at the
output. The choice is one bit for the whole model, measured on the calibration samples, so
it cannot fit them the way a per-tensor choice does (§I.4.2).

A detector's rare large activations are its objects: clipping them lowers the scores of
exactly the detections, while the box coordinates, which rule the output's SQNR, prefer
the clipped grid. Where the first output joins parts, each candidate is judged by its
worst part (§I.10.1), and a percentile ten times milder is a third candidate.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from eightbit.analysis.floor import floor_metric
from eightbit.analysis.slices import (
    COLLAPSE_DB,
    Part,
    output_parts,
    output_probabilities,
    output_spatial_axes,
    slice_verdict,
)
from eightbit.calibrate import Ranges
from eightbit.calibrate.data import DataLike
from eightbit.errors import ConfigError
from eightbit.export import to_qdq
from eightbit.graph import Graph
from eightbit.improve.float_pass import SharedFloat, shares_float_pass
from eightbit.improve.measure import OutputReference, count, read_samples
from eightbit.plan import make_plan
from eightbit.quant import QuantConfig
from eightbit.steps import StepReport

NAME = "clipping"
# Samples the choice is measured on (read once, held in memory): a slice verdict needs
# more of them than a whole-output SQNR does.
SAMPLES = 64
# (C.10.2) On a model past SHARED_PASS_BYTES each int8 sample run costs a fraction of a
# second: the choice scores on bias correction's 16 samples, whose "before" it then is.
BIG_MODEL_SAMPLES = 16
# The observed extremes replace the calibrated ranges only when they gain at least this
# much: below it, the difference is within what other samples would change.
MARGIN_DB = 0.5
# (I.10.1) The milder candidate keeps this fraction of the values the calibrated
# percentile clips: 99.99 -> 99.999.
MILDER_CLIPPED_FRACTION = 0.1


@dataclass(frozen=True)
class Scored:
    """An int8 model's first output on the samples: its worst slice capped at the floor
    (-inf for a collapse, §I.9), its SQNR, and the SQNR of its worst part where it joins
    parts (None otherwise)."""

    floor_db: float
    sqnr_db: float
    part_db: float | None = None

    @property
    def judged_db(self) -> float:
        """The SQNR the choice reads after the floor (I.10.1): the worst part's, else the
        whole output's."""
        return self.sqnr_db if self.part_db is None else self.part_db

    def beats(self, other: Scored) -> bool:
        """Better by the margin: on the floor first, then, level on it, on the SQNR of the
        worst part or the whole output (I.14, I.10.1). A collapse counts as a worst slice
        of ``COLLAPSE_DB``: between two models that both lose a slice on a few samples, or
        one barely keeps it, the output decides."""
        mine, theirs = max(self.floor_db, COLLAPSE_DB), max(other.floor_db, COLLAPSE_DB)
        if mine > theirs + MARGIN_DB:
            return True
        return abs(mine - theirs) <= MARGIN_DB and self.judged_db >= other.judged_db + MARGIN_DB

    def describe(self) -> str:
        floor = "collapsed" if self.floor_db == float("-inf") else f"{self.floor_db:.1f}"
        part = "" if self.part_db is None else f", worst part {self.part_db:.2f} dB"
        return f"{self.sqnr_db:.2f} dB (worst slice to the floor {floor}{part})"


def choose_clipping(
    model: onnx.ModelProto,
    ranges: Ranges,
    data: DataLike,
    config: QuantConfig,
    *,
    separate_joins: bool = False,
    threads: int | None = None,
    shared: SharedFloat | None = None,
) -> tuple[Ranges, StepReport, SharedFloat | None]:
    """``ranges``, or the observed extremes if the int8 model's first output is better with
    them (``Scored.beats``) on the first calibration samples of ``data``; its report; and
    ``shared`` (calibration's pass of ``model``, §C.10, whose float output is then the
    reference) with the chosen candidate's int8 output kept (``SharedFloat.int8_before``)."""
    started = time.perf_counter()
    if ranges.method == "minmax":
        note = "skipped: the ranges are the extremes already"
        return ranges, _report(started, None, None, note), shared
    graph = Graph(model)
    batches = read_samples(data, graph, scoring_samples(graph))
    samples = count(batches)
    computed = None
    if shared is not None and shared.serves(model, samples):
        computed = (shared.output_name, shared.output[:samples])
    reference = OutputReference(model, batches, threads, computed=computed)
    probabilities = output_probabilities(graph).get(graph.outputs[0].name, ())
    parts = output_parts(graph).get(graph.outputs[0].name, ())
    spatial = output_spatial_axes(graph).get(graph.outputs[0].name, ())

    outputs: dict[int, np.ndarray] = {}

    def score(candidate: Ranges) -> Scored:
        plan = make_plan(graph, candidate, config, separate_joins=separate_joins)
        values = reference.outputs(to_qdq(model, plan))
        if computed is not None:
            outputs[id(candidate)] = values
        return Scored(
            floor_metric(reference.values, values, probabilities, spatial),
            reference.sqnr_of(values),
            worst_part_db(reference.values, values, parts),
        )

    calibrated = score(ranges)
    chosen, best, chosen_label = ranges, calibrated, None
    scores: dict[str, str] = {}
    for label, candidate in _challengers(ranges, parts):
        scored = score(candidate)
        scores[label] = f"{label} {scored.describe()}"
        if scored.beats(best):
            chosen, best, chosen_label = candidate, scored, label
    others = "; ".join(text for label, text in scores.items() if label != chosen_label)
    if chosen_label is None:
        note = f"{ranges.method} ranges kept: output {calibrated.describe()}; {others}"
    else:
        note = (
            f"{chosen_label} chosen over {ranges.method} ranges: output "
            f"{calibrated.describe()} -> {best.describe()}; also tried {others}"
        )
    report = _report(started, calibrated.sqnr_db, best.sqnr_db, note + " on calibration samples")
    return chosen, report, _kept(shared, chosen, outputs)


def worst_part_db(
    reference: np.ndarray, quantized: np.ndarray, parts: Sequence[Part]
) -> float | None:
    """(I.10.1) The lowest SQNR of the output's parts along their axes (the quick check's
    part verdicts, §A.9); None without parts."""
    verdict = slice_verdict(reference, quantized, parts) if parts else None
    found = [part.sqnr_db for part in verdict.parts] if verdict is not None else []
    return min(found) if found else None


def _challengers(ranges: Ranges, parts: Sequence[Part]) -> list[tuple[str, Ranges]]:
    """The candidates tried against the calibrated ranges, mildest clipping last: a
    percentile that clips a tenth as many values where the output joins parts (I.10.1),
    then the observed extremes."""
    found = []
    percentile = ranges.options.get("percentile")
    if parts and ranges.method == "percentile" and percentile is not None:
        milder = 100.0 - (100.0 - float(percentile)) * MILDER_CLIPPED_FRACTION
        # Ranges loaded without their histograms have nothing to reselect.
        with contextlib.suppress(ConfigError):
            milder_ranges = ranges.reselect("percentile", percentile=milder)
            found.append((f"percentile {milder:g}", milder_ranges))
    found.append(("observed extremes", ranges.extremes()))
    return found


def scoring_samples(graph: Graph) -> int:
    """(C.10.2) The first calibration samples the candidates are scored on."""
    return BIG_MODEL_SAMPLES if shares_float_pass(graph) else SAMPLES


def _kept(
    shared: SharedFloat | None, chosen: Ranges, outputs: dict[int, np.ndarray]
) -> SharedFloat | None:
    """``shared`` with the int8 output of ``chosen``, when it was scored against it."""
    values = outputs.get(id(chosen))
    if shared is None or values is None:
        return shared
    return replace(shared, int8_ranges=chosen, int8_output=values)


def _report(started: float, before: float | None, after: float | None, note: str) -> StepReport:
    return StepReport(NAME, time.perf_counter() - started, before, after, notes=(note,))
