"""One clipping policy per model (docs/numerics.md §I.10): the observed extremes replace the
calibrated ranges only when the int8 output is measurably better with them."""

from __future__ import annotations

import numpy as np
import onnx

from eightbit.analysis.slices import output_parts
from eightbit.calibrate import CalibrationConfig, Ranges, calibrate
from eightbit.export import to_qdq
from eightbit.graph import Graph, normalize
from eightbit.improve.clipping_choice import MARGIN_DB, Scored, choose_clipping, worst_part_db
from eightbit.improve.measure import OutputReference, read_samples
from eightbit.plan import activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig
from tests.fixtures.joins import sparse_objects, sparse_score_head
from tests.improve.helpers import conv_pair, inputs


def _calibrated(method: str, percentile: float) -> tuple[onnx.ModelProto, np.ndarray, Ranges]:
    model = normalize(conv_pair("Relu", spread=10.0))
    x = inputs(model, n=32)
    needed = activation_tensors_to_calibrate(Graph(model), QuantConfig())
    config = CalibrationConfig(method=method, percentile=percentile)  # type: ignore[arg-type]
    return model, x, calibrate(model, {"input": x}, config, tensors=needed)


def _output_db(model: onnx.ModelProto, x: np.ndarray, ranges: Ranges) -> float:
    graph = Graph(model)
    reference = OutputReference(model, read_samples({"input": x}, graph, 32), None)
    return reference.sqnr(to_qdq(model, make_plan(graph, ranges, QuantConfig())))


def test_ranges_clipped_far_too_tight_give_way_to_the_observed_extremes() -> None:
    model, x, ranges = _calibrated("percentile", percentile=60.0)
    chosen, report, _ = choose_clipping(model, ranges, {"input": x}, QuantConfig())
    assert chosen.method == "minmax"
    for name in ranges:
        assert (chosen[name].min, chosen[name].max) == (
            ranges[name].observed_min,
            ranges[name].observed_max,
        )
    assert report.before_db is not None and report.after_db is not None
    assert report.after_db >= report.before_db + MARGIN_DB
    # The report's figures are the output SQNR of the two int8 models on the samples.
    assert abs(report.before_db - _output_db(model, x, ranges)) < 1e-6
    assert abs(report.after_db - _output_db(model, x, chosen)) < 1e-6


def test_the_calibrated_ranges_stay_without_a_clear_gain() -> None:
    model, x, ranges = _calibrated("percentile", percentile=99.99)
    gain = _output_db(model, x, ranges.extremes()) - _output_db(model, x, ranges)
    assert gain < MARGIN_DB  # the premise: on plain normal data clipping costs nothing
    chosen, report, _ = choose_clipping(model, ranges, {"input": x}, QuantConfig())
    assert chosen is ranges
    assert report.before_db == report.after_db
    assert "kept" in report.notes[0]


def test_minmax_ranges_are_not_measured_again() -> None:
    model, x, ranges = _calibrated("minmax", percentile=99.99)
    chosen, report, _ = choose_clipping(model, ranges, {"input": x}, QuantConfig())
    assert chosen is ranges
    assert report.before_db is None and "skipped" in report.notes[0]


def test_the_floor_decides_first_then_the_sqnr() -> None:
    inf = float("inf")
    # A slice brought up to the floor wins even at a lower whole-output SQNR.
    assert Scored(10.0, 20.0).beats(Scored(4.0, 31.0))
    assert not Scored(4.0, 31.0).beats(Scored(10.0, 20.0))
    # Level on the floor (both at it, both collapsed, or within the margin): the SQNR decides.
    assert Scored(10.0, 25.0).beats(Scored(10.0, 20.0))
    assert Scored(-inf, 5.0).beats(Scored(-inf, 1.0))
    assert Scored(6.2, 25.0).beats(Scored(6.0, 20.0))
    # A collapse counts as a worst slice of 0 dB: barely keeping the slice is no gain.
    assert not Scored(0.2, 20.0).beats(Scored(-inf, 25.0))
    assert Scored(-inf, 25.0).beats(Scored(0.2, 20.0))
    # Within the margin on both: no change.
    assert not Scored(10.0, 20.0 + MARGIN_DB / 2).beats(Scored(10.0, 20.0))
    assert not Scored(6.0 + MARGIN_DB / 2, 20.0).beats(Scored(6.0, 20.0))


def test_a_detector_head_gets_the_clipping_its_scores_need() -> None:
    """(I.10.1) The box part rules the whole output's SQNR and prefers the calibrated
    percentile; the score part loses its objects to it. The milder percentile keeps them,
    the observed extremes would coarsen the boxes' grid for one outlier."""
    model = normalize(sparse_score_head())
    data = sparse_objects()
    needed = activation_tensors_to_calibrate(Graph(model), QuantConfig())
    config = CalibrationConfig(percentile=99.5)
    ranges = calibrate(model, data, config, tensors=needed)
    chosen, report, _ = choose_clipping(model, ranges, data, QuantConfig(), separate_joins=True)
    assert chosen.method == "percentile"
    assert chosen.options["percentile"] == 99.95
    assert "percentile 99.95 chosen" in report.notes[0]
    # The scores come back (the calibrated ranges clip every object), the boxes stay fine.
    graph = Graph(model)
    reference = OutputReference(model, read_samples(data, graph, 64), None)
    parts = output_parts(graph)["out"]
    scores = [part for part in parts if part.name == "scores"]

    def scores_db(candidate: Ranges) -> float:
        plan = make_plan(graph, candidate, QuantConfig(), separate_joins=True)
        values = reference.outputs(to_qdq(model, plan))
        db = worst_part_db(reference.values, values, scores)
        assert db is not None
        return db

    assert scores_db(chosen) > scores_db(ranges) + 10.0
    assert report.after_db is not None and report.after_db > 30.0


def test_the_worst_part_decides_where_the_output_joins_parts() -> None:
    # Level on the floor: the worst part's SQNR decides, not the whole output's.
    assert Scored(10.0, 38.0, 18.0).beats(Scored(10.0, 41.0, 12.0))
    assert not Scored(10.0, 41.0, 12.0).beats(Scored(10.0, 38.0, 18.0))
    # Without parts, the whole output's SQNR as before.
    assert Scored(10.0, 41.0).beats(Scored(10.0, 38.0))
