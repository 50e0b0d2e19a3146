"""Per-tensor range refinement (docs/numerics.md §I.4): candidates come from the
stored histograms, and what is kept never lowers the output SQNR it was judged by."""

from __future__ import annotations

import numpy as np
import onnx

from eightbit.calibrate import CalibrationConfig, Ranges, calibrate
from eightbit.export import to_qdq
from eightbit.graph import Graph, normalize
from eightbit.improve.measure import OutputReference, read_samples
from eightbit.improve.refine import candidate_ranges, refine_ranges
from eightbit.plan import activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig
from tests.improve.helpers import conv_pair, inputs


def _calibrated(
    method: str, percentile: float = 99.99
) -> tuple[onnx.ModelProto, np.ndarray, Ranges]:
    model = normalize(conv_pair("Relu", spread=10.0))
    x = inputs(model, n=32)
    needed = activation_tensors_to_calibrate(Graph(model), QuantConfig())
    config = CalibrationConfig(method=method, percentile=percentile)  # type: ignore[arg-type]
    return model, x, calibrate(model, {"input": x}, config, tensors=needed)


def test_a_range_clipped_far_too_tight_is_widened_and_the_output_improves() -> None:
    model, x, ranges = _calibrated("percentile", percentile=60.0)
    refined, report = refine_ranges(model, ranges, {"input": x}, QuantConfig(), samples=32)
    assert report.before_db is not None and report.after_db is not None
    assert report.after_db > report.before_db + 1.0
    changed = {name for name in ranges if ranges[name] != refined[name]}
    assert changed and changed == {gain.layer for gain in report.layers}
    for name in changed:
        assert refined[name].max > ranges[name].max  # widened
        assert refined[name].observed_max == ranges[name].observed_max
    # The report's numbers are the output SQNR of the int8 models on the same samples.
    reference = OutputReference(model, read_samples({"input": x}, Graph(model), 32), None)
    graph = Graph(model)
    after = reference.sqnr(to_qdq(model, make_plan(graph, refined, QuantConfig())))
    assert abs(after - report.after_db) < 1e-6


def test_refinement_never_lowers_the_sqnr_it_is_judged_by() -> None:
    model, x, ranges = _calibrated("percentile")
    refined, report = refine_ranges(model, ranges, {"input": x}, QuantConfig(), samples=16)
    assert report.before_db is not None and report.after_db is not None
    assert report.after_db >= report.before_db
    if report.after_db == report.before_db:
        assert all(ranges[name] == refined[name] for name in ranges)


def test_without_histograms_nothing_changes() -> None:
    model, x, ranges = _calibrated("minmax")
    refined, report = refine_ranges(model, ranges, {"input": x})
    assert refined is ranges
    assert report.notes[0].startswith("skipped")


def test_candidates_are_distinct_and_include_the_calibrated_range() -> None:
    _, _, ranges = _calibrated("percentile")
    candidates = candidate_ranges(ranges, list(ranges))
    assert list(ranges) and set(candidates) == set(ranges)  # one entry per tensor asked for
    for name, options in candidates.items():
        assert options["calibrated"] == (ranges[name].min, ranges[name].max)
        assert len(set(options.values())) == len(options)
        assert len(options) > 1  # a percentile range always has a wider minmax beside it
        minmax = Ranges.reselect(ranges, "minmax")[name]
        assert (minmax.min, minmax.max) in options.values()
